"""Gunicorn settings of the local Label Studio (``python -m annotation.server``).

Read by gunicorn inside Label Studio's own environment (``.label-studio/venv``), not the pipeline's.
``label-studio start`` serves with Django's development server: one process, so one export at a time on
one core. Here Label Studio runs as in its production images, with worker processes (``--workers``, one
per core from 2 to 8 unless told), so that the pull's concurrent export requests run on every core.

The garbage collector's first threshold is raised: an export builds some 10^5 Django model instances per
10,000 tasks, and at the default threshold (700) the collector walks the live ones again and again
(measured on 10,000 tasks x 10 annotations in one process: 23.5 s with the default, 17.9 s without it).
"""

import gc
import os
import sys

import label_studio

# as label-studio start does: Label Studio's modules import one another as core.*, tasks.*, ...
sys.path.insert(0, os.path.dirname(label_studio.__file__))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "label_studio.core.settings.label_studio")
gc.set_threshold(50_000, 20, 100)

wsgi_app = "label_studio.core.wsgi:application"
worker_class = "sync"  # one request per process at a time: concurrent requests go to different processes
timeout = 600  # a whole project exported in one request can take minutes
limit_request_line = 8190  # the pull names a few hundred task ids per export request
control_socket_disable = True  # one socket per user by default: servers of tests and of the user would share it
