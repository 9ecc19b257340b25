# The two commands a newcomer needs; each installs what it needs first.
#   make demo   the whole pipeline on the embedded sample, offline, then its metrics
#   make test   the test suite
PYTHON ?= python3
UV := $(PYTHON) -m uv
MIRROR_PORT := 8765
LABEL_STUDIO := .label-studio/venv

.PHONY: demo test install

install:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv>=0.5"
	$(UV) sync --locked
	@# Label Studio runs from its own environment: its pins conflict with the torch stack
	@test -x $(LABEL_STUDIO)/bin/python || $(UV) venv --quiet --python 3.11 $(LABEL_STUDIO)
	$(UV) pip sync --quiet --python $(LABEL_STUDIO)/bin/python annotation/label-studio.lock.txt

demo: install
	$(UV) run --locked python -m annotation.server run -- \
		python -m pipeline.mirror --root sample/media --port $(MIRROR_PORT) -- dvc repro
	$(UV) run --locked dvc metrics show

test: install
	$(UV) run --locked pytest
