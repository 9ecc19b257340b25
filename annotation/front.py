"""The annotators' front: a reverse proxy before Label Studio that keeps every vote blind.

    python -m annotation.front --upstream http://127.0.0.1:8080 --port 8081 --record front_votes.jsonl

(``python -m annotation.server start`` starts it beside the server; the admin's token comes in the
environment, ``LABEL_STUDIO_FRONT_ADMIN_TOKEN``, never on the command line.)

Label Studio's Community Edition gives every member of the organisation every permission: an annotator
can open the data manager, every other annotator's annotation of a face, the export and the project's
settings (the README's "What an annotator can and cannot see" has the code paths). This front lets the
admin (and the pipeline, whose token is the admin's) through untouched. Any other account, by session
or by token, may make only the requests that the label stream (``/projects/<id>/data?labeling=1``)
needs for its own annotations (``ANNOTATOR_ROUTES``); everything else answers 403. The task payloads it
relays keep only the task's data, the model's predictions and the annotator's own annotations and
drafts (``blind_task``); a data-manager filter or ordering, which could pick tasks by other people's
results, is refused; an annotation may not be filed in another's name. ``/`` (where a login or a
sign-up through the invite link lands) sends an annotator to the label stream.

Every annotation an annotator creates or changes through the front, and Label Studio accepts, is written to
the record (``--record``; ``annotation/front_record.py`` has its format): one JSON line per vote, appended
before the answer goes back. It is kept across restarts, and the admin's token reads it at ``/front/votes``:
the pull marks a vote as cast blind only if the record has its creation and its latest change. A vote made
or changed straight on Label Studio's own port is not in it.

Hand-written on aiohttp (already in the environment) rather than a proxy package: the PyPI reverse
proxies for asyncio (asgiproxy, fastapi-proxy-lib) are 0.x releases with few maintainers that would
bring an ASGI server with them, and each rule here needs the request's user and, for task payloads,
the whole JSON body, which they would hand over as a stream anyway.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from annotation import front_record

ADMIN_TOKEN_VARIABLE = "LABEL_STUDIO_FRONT_ADMIN_TOKEN"
# hop-by-hop headers (RFC 9110, 7.6.1) are the proxy's own on each side
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade"}
# what anyone may fetch, logged in or not: the pages' scripts, styles and fonts, and the way in
ASSETS = re.compile(r"/(static|react-app|label-studio-frontend)/.*|/favicon\.ico|/health/?")
WAY_IN = re.compile(r"/user/(login|signup|logout)/?")
# the keys of a task that the label stream reads; the others count or name the task's other annotators
# (annotators, total_annotations, annotations_results, is_labeled, updated_by, comment_authors, ...)
TASK_KEYS = {"id", "inner_id", "data", "project", "annotations", "predictions", "drafts", "unique_lock_id",
             "queue", "created_at", "updated_at"}
IDENTITY_SECONDS = 30  # how long the user behind a session cookie or token is remembered


class Refused(Exception):
    """A request an annotator may not make; the message says why."""


@dataclass(frozen=True)
class Who:
    user_id: int | None  # None: not logged in
    admin: bool = False


def author(annotation: dict[str, Any]) -> Any:
    """The user id of an annotation as Label Studio serialises it (an id, or the user expanded)."""
    completed_by = annotation.get("completed_by")
    return completed_by.get("id") if isinstance(completed_by, dict) else completed_by


def blind_task(task: Any, user_id: int) -> Any:
    """A task as the annotator ``user_id`` may see it: its data, the model's predictions, their own
    annotations and drafts, and none of the keys that tell of other annotators."""
    if not isinstance(task, dict):
        return task
    kept = {key: value for key, value in task.items() if key in TASK_KEYS}
    if isinstance(kept.get("annotations"), list):
        kept["annotations"] = [a for a in kept["annotations"] if isinstance(a, dict) and author(a) == user_id]
    if isinstance(kept.get("drafts"), list):
        kept["drafts"] = [d for d in kept["drafts"] if isinstance(d, dict) and d.get("user") == user_id]
    return kept


def _unfiltered(body: dict[str, Any], where: str) -> None:
    """Data-manager filters and orderings select tasks by what is in them, other people's results
    included (``annotations_results``): the label stream sends none, and an annotator may send none."""
    data = body.get("data", body) if isinstance(body.get("data"), dict) else body
    filters = data.get("filters") or {}
    if (filters.get("items") if isinstance(filters, dict) else filters) or data.get("ordering") \
            or data.get("semantic_search") or "view" in body or "query" in body:
        raise Refused(f"{where}: annotators may not filter, order or search tasks")


def open_record(path: Path) -> int:
    """The record, opened to append (made if missing). A line cut short by a front killed mid-write is
    ended here, so that the next vote starts a line of its own (the pull skips the cut one, with a warning)."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, b"\n")
    return fd


class Front:
    """The proxy: one aiohttp client session to Label Studio, the admin's token and id, the record, the rules."""

    def __init__(self, upstream: str, admin_token: str, record: Path):
        self.upstream = upstream.rstrip("/")
        self.admin_token = admin_token
        self.admin_id: int | None = None
        self.session: aiohttp.ClientSession | None = None
        self.identities: dict[tuple[str, str], tuple[Who, float]] = {}
        self.record = record
        self.record_fd: int | None = None

    async def open(self, _app: web.Application | None = None) -> None:
        self.record_fd = open_record(self.record)
        # compressed bodies pass through as they came; the ones this front rewrites are asked uncompressed
        self.session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        self.admin_id = (await self.admin_json("/api/current-user/whoami"))["id"]

    async def close(self, _app: web.Application | None = None) -> None:
        if self.session is not None:
            await self.session.close()
        if self.record_fd is not None:
            os.close(self.record_fd)

    def recorded(self, annotation: Any, user_id: int, action: str) -> Any:
        """Append the vote Label Studio just accepted to the record, in one write (no buffer of the front's
        own holds it; O_APPEND keeps each line whole and in place), before the answer goes back."""
        if isinstance(annotation, dict) and "id" in annotation:
            os.write(self.record_fd, front_record.line(annotation, user_id, action).encode())
        return annotation

    # -- talking to Label Studio ----------------------------------------------------------------------
    async def admin_json(self, path: str) -> Any:
        """GET ``path`` as the admin (for the front's own checks); None if it is not there."""
        async with self.session.get(f"{self.upstream}{path}", headers={
                "Authorization": f"Token {self.admin_token}", "Accept-Encoding": "identity"}) as response:
            if response.status == 404:
                return None
            response.raise_for_status()
            return await response.json()

    async def forward(self, request: web.Request, body: bytes, plain: bool = False) -> aiohttp.ClientResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}}
        if plain:
            headers["Accept-Encoding"] = "identity"
        # the whole body, with its length: Label Studio under gunicorn reads no chunked request body
        return await self.session.request(request.method, f"{self.upstream}{request.rel_url}", headers=headers,
                                          data=body, allow_redirects=False)

    async def who(self, request: web.Request) -> Who:
        authorization = request.headers.get("Authorization", "")
        if authorization.split(" ", 1)[-1] == self.admin_token and authorization.split(" ", 1)[0] in ("Token",
                                                                                                        "Bearer"):
            return Who(self.admin_id, admin=True)
        key = (request.cookies.get("sessionid", ""), authorization)
        if key == ("", ""):
            return Who(None)
        known = self.identities.get(key)
        if known and known[1] > time.monotonic():
            return known[0]
        headers = {"Cookie": request.headers.get("Cookie", ""), "Accept-Encoding": "identity"}
        if authorization:
            headers["Authorization"] = authorization
        async with self.session.get(f"{self.upstream}/api/current-user/whoami", headers=headers) as response:
            user_id = (await response.json())["id"] if response.status == 200 else None
        who = Who(user_id, admin=user_id is not None and user_id == self.admin_id)
        now = time.monotonic()
        if len(self.identities) > 10_000:  # forget the expired ones, so that old sessions do not pile up
            self.identities = {k: v for k, v in self.identities.items() if v[1] > now}
        self.identities[key] = (who, now + IDENTITY_SECONDS)
        return who

    # -- answers ----------------------------------------------------------------------------------------
    async def relay(self, request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        """Label Studio's answer, streamed as it came."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in HOP_BY_HOP:
                response.headers.add(key, value)
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(1 << 16):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def rewritten(self, upstream: aiohttp.ClientResponse, change: Callable[[Any], Any]) -> web.Response:
        """Label Studio's JSON answer after ``change``; other answers (errors, redirects) as they came."""
        body = await upstream.read()
        if upstream.status < 300 and upstream.content_type == "application/json":
            body = json.dumps(change(json.loads(body))).encode()
        response = web.Response(status=upstream.status, body=body)
        for key, value in upstream.headers.items():
            if key.lower() not in HOP_BY_HOP | {"content-length", "content-encoding"}:
                response.headers.add(key, value)
        return response

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if ASSETS.fullmatch(path) or WAY_IN.fullmatch(path):
            body = await request.read()
            async with await self.forward(request, body) as upstream:
                return await self.relay(request, upstream)
        who = await self.who(request)
        if who.admin and path == front_record.RECORD_ROUTE and request.method == "GET":
            return web.FileResponse(self.record, headers={"Content-Type": "application/x-ndjson"})
        if who.admin:
            body = await request.read()
            async with await self.forward(request, body) as upstream:
                return await self.relay(request, upstream)
        if who.user_id is None:
            if request.method == "GET" and not path.startswith("/api/"):
                raise web.HTTPFound(f"/user/login/?next={request.rel_url}")
            return web.json_response({"detail": "log in first (/user/login/)"}, status=401)
        try:
            for methods, pattern, rule in ANNOTATOR_ROUTES:
                match = pattern.fullmatch(path)
                if match and request.method in methods:
                    return await rule(self, request, who.user_id, match)
            raise Refused(f"{request.method} {path} is not part of the label stream")
        except Refused as refused:
            return self.refusal(request, str(refused))

    def refusal(self, request: web.Request, why: str) -> web.Response:
        if "text/html" in request.headers.get("Accept", "") and not request.path.startswith("/api/"):
            page = (f"<!doctype html><title>Not for annotators</title><h1>403: not for annotators</h1>"
                    f"<p>{html.escape(why)}.</p><p><a href='/'>Back to labelling</a></p>")
            return web.Response(status=403, text=page, content_type="text/html")
        return web.json_response({"detail": f"annotators may not: {why}"}, status=403)

    # -- the annotator's rules ----------------------------------------------------------------------------
    async def passed(self, request: web.Request, user_id: int, match: re.Match) -> web.StreamResponse:
        async with await self.forward(request, await request.read()) as upstream:
            return await self.relay(request, upstream)

    async def filtered(self, request: web.Request, change: Callable[[Any], Any],
                       body: bytes | None = None) -> web.Response:
        async with await self.forward(request, await request.read() if body is None else body,
                                      plain=True) as upstream:
            return await self.rewritten(upstream, change)

    async def landing(self, request: web.Request, user_id: int, match: re.Match) -> web.Response:
        """Where a login or a sign-up lands: the label stream, or the list of them if there are several."""
        projects = await self.admin_json("/api/projects?page_size=1000")
        projects = projects.get("results", []) if isinstance(projects, dict) else projects
        if len(projects) == 1:
            raise web.HTTPFound(f"/projects/{projects[0]['id']}/data?labeling=1")
        links = "".join(f"<li><a href='/projects/{p['id']}/data?labeling=1'>{html.escape(p['title'])}</a></li>"
                        for p in projects) or "<li>none yet</li>"
        return web.Response(text=f"<!doctype html><title>Label</title><h1>Faces to label</h1><ul>{links}</ul>",
                            content_type="text/html")

    async def label_stream_page(self, request: web.Request, user_id: int, match: re.Match) -> web.StreamResponse:
        if request.query.get("labeling") != "1":
            raise Refused("the data manager is not for annotators: the label stream is "
                          f"{request.path}?labeling=1")
        return await self.passed(request, user_id, match)

    async def own_users(self, request: web.Request, user_id: int, match: re.Match) -> web.Response:
        return await self.filtered(request, lambda users: [u for u in users if u.get("id") == user_id]
                                   if isinstance(users, list) else users)

    async def views(self, request: web.Request, user_id: int, match: re.Match) -> web.Response:
        """The data manager's tabs: the annotator's own, made without filters (the label stream makes
        one on its first visit)."""
        body = await request.read()
        if request.method == "POST":
            _unfiltered(json.loads(body or b"{}"), "a tab")
        return await self.filtered(request, lambda views: [v for v in views if v.get("user") == user_id]
                                   if isinstance(views, list) else views, body)

    async def own_view(self, view: str | None, user_id: int) -> None:
        if view is not None:
            found = await self.admin_json(f"/api/dm/views/{int(view)}") if view.isdigit() else None
            if not found or found.get("user") != user_id:
                raise Refused(f"tab {view} is not the annotator's own")

    async def task_list(self, request: web.Request, user_id: int, match: re.Match) -> web.Response:
        """The tasks of a tab, as the label stream lists them: only the annotator's own tab, unfiltered."""
        unknown = set(request.query) - {"page", "page_size", "view", "project"}
        if unknown:
            raise Refused(f"the task list with {', '.join(sorted(unknown))}")
        await self.own_view(request.query.get("view"), user_id)

        def blind(page: Any) -> Any:
            if not isinstance(page, dict):
                return page
            return {"tasks": [blind_task(t, user_id) for t in page.get("tasks", [])], "total": page.get("total")}

        return await self.filtered(request, blind)

    async def next_task(self, request: web.Request, user_id: int, match: re.Match) -> web.Response:
        """The next task of the label stream (a data-manager action, or the project's /next)."""
        body = await request.read()
        if match.group(0).startswith("/api/dm/actions"):
            if request.query.get("id") != "next_task":
                raise Refused(f"the data-manager action {request.query.get('id')!r}")
            _unfiltered(json.loads(body or b"{}"), "the next task")
        if "view" in request.query or "query" in request.query:
            raise Refused("the next task of a chosen tab or query")
        return await self.filtered(request, lambda task: blind_task(task, user_id), body)

    async def task(self, request: web.Request, user_id: int, match: re.Match) -> web.Response:
        return await self.filtered(request, lambda task: blind_task(task, user_id))

    async def annotations(self, request: web.Request, user_id: int, match: re.Match) -> web.Response:
        """A task's annotations: the annotator's own; a new one in their own name only, and recorded."""
        body = await request.read()
        if request.method == "POST":
            self._own_name(body, user_id)
            return await self.filtered(request, lambda created: self.recorded(created, user_id, "created"), body)
        return await self.filtered(request, lambda found: [a for a in found if author(a) == user_id]
                                   if isinstance(found, list) else found, body)

    def _own_name(self, body: bytes, user_id: int) -> None:
        sent = json.loads(body or b"{}")
        if isinstance(sent, dict) and sent.get("completed_by", user_id) != user_id:
            raise Refused("an annotation in another's name")

    async def annotation(self, request: web.Request, user_id: int, match: re.Match) -> web.StreamResponse:
        """One annotation (or the drafts of one): the annotator's own only."""
        found = await self.admin_json(f"/api/annotations/{int(match.group(1))}")
        if not found or author(found) != user_id:
            raise Refused(f"annotation {match.group(1)} is not the annotator's own")
        if request.method == "PATCH":
            self._own_name(await request.read(), user_id)
            return await self.filtered(request, lambda changed: self.recorded(changed, user_id, "updated"))
        return await self.passed(request, user_id, match)

    async def drafts(self, request: web.Request, user_id: int, match: re.Match) -> web.Response:
        return await self.filtered(request, lambda found: [d for d in found if d.get("user") == user_id]
                                   if isinstance(found, list) else found)

    async def draft(self, request: web.Request, user_id: int, match: re.Match) -> web.StreamResponse:
        found = await self.admin_json(f"/api/drafts/{int(match.group(1))}")
        if not found or found.get("user") != user_id:
            raise Refused(f"draft {match.group(1)} is not the annotator's own")
        return await self.passed(request, user_id, match)


Rule = Callable[[Front, web.Request, int, re.Match], Awaitable[web.StreamResponse]]


def _route(methods: str, pattern: str, rule: Rule) -> tuple[set[str], re.Pattern, Rule]:
    return set(methods.split()), re.compile(pattern), rule


# everything an annotator's session or token may ask for: the label stream's own requests, as recorded
# from Label Studio 1.23's label stream in Chromium (tests/test_front.py replays them); the rest is 403
ANNOTATOR_ROUTES = [
    _route("GET", r"/(projects/?)?", Front.landing),
    _route("GET", r"/projects/\d+/data/?", Front.label_stream_page),
    _route("GET", r"/data/local-files/?", Front.passed),  # the crops, as the project's storage allows
    _route("GET", r"/api/version/?|/api/current-user/whoami/?|/api/projects/\d+/?|/api/dm/project/?"
                  r"|/api/dm/columns/?|/api/ml/?|/api/label_links/?|/api/projects/\d+/label-stream-history/?",
           Front.passed),
    _route("GET", r"/api/users/?", Front.own_users),
    _route("GET POST", r"/api/dm/views/?", Front.views),
    _route("GET", r"/api/tasks/?", Front.task_list),
    _route("POST", r"/api/dm/actions/?", Front.next_task),
    _route("GET", r"/api/projects/\d+/next/?", Front.next_task),
    _route("GET", r"/api/tasks/\d+/?", Front.task),
    _route("GET POST", r"/api/tasks/\d+/annotations/?", Front.annotations),
    _route("GET PATCH DELETE", r"/api/annotations/(\d+)/?", Front.annotation),
    _route("GET POST", r"/api/tasks/\d+/annotations/(\d+)/drafts/?", Front.annotation),
    _route("GET POST", r"/api/tasks/\d+/drafts/?", Front.drafts),
    _route("GET PATCH DELETE", r"/api/drafts/(\d+)/?", Front.draft),
]


def app(upstream: str, admin_token: str, record: Path) -> web.Application:
    front = Front(upstream, admin_token, record)
    application = web.Application(client_max_size=1 << 30)  # the admin's imports pass through it
    application.on_startup.append(front.open)
    application.on_cleanup.append(front.close)
    application.router.add_route("*", "/{tail:.*}", front.handle)
    return application


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="Label Studio's own address")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, required=True, help="the record of the votes cast through the "
                        "front (JSON lines, appended; kept across restarts)")
    args = parser.parse_args(argv)
    token = os.environ.get(ADMIN_TOKEN_VARIABLE)
    if not token:
        parser.error(f"{ADMIN_TOKEN_VARIABLE} (the admin's API token) is not set")
    web.run_app(app(args.upstream, token, args.record), host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
