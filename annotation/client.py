"""The pipeline's one Label Studio client (label-studio-sdk underneath), with errors that say what to do.

It talks to the server named by ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``, or else to the local
one started by ``python -m annotation.server`` (its address and token are in ``.label-studio/server.json``).
Every request goes over one HTTP stack, httpx: the SDK's calls and the few this client makes itself (task
listing and export, which the SDK does not page or split; signing annotators up) share one connection pool.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from label_studio_sdk.actions.types import PrepareParamsRequestRequestSelectedItemsIncluded
from label_studio_sdk.client import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from pipeline.common import StageError

LOCAL_STATE = Path(".label-studio") / "server.json"
IMPORT_CHUNK = 2000  # tasks per import request
EXPORT_CHUNK = 300  # task ids per export request: they go in the URL, which servers limit to about 8 KB
EXPORT_REQUESTS = 4  # export requests at a time


def local_state() -> dict | None:
    """What the local server's start wrote (``LOCAL_STATE``: its url, token, front_url, ...), or None if no
    local server was started here."""
    if not LOCAL_STATE.exists():
        return None
    try:
        state = json.loads(LOCAL_STATE.read_text())
        if isinstance(state["url"], str) and isinstance(state["token"], str):
            return state
    except (ValueError, KeyError, TypeError):
        pass
    raise StageError(f"{LOCAL_STATE.resolve()}: not readable as the state of a Label Studio server "
                     "(truncated?); python -m annotation.server status says what to do")


def connection() -> tuple[str, str]:
    """(url, token) of the Label Studio to use."""
    url, token = os.environ.get("LABEL_STUDIO_URL"), os.environ.get("LABEL_STUDIO_API_KEY")
    if url and token:
        return url.rstrip("/"), token
    if url or token:
        raise StageError("set both LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, or neither (to use the local server)")
    if state := local_state():
        return state["url"], state["token"]
    raise StageError("no Label Studio to talk to: start the local one (python -m annotation.server start) "
                     "or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 300):
        if url is None or token is None:
            url, token = connection()
        self.url, self.token = url, token
        self.timeout = timeout
        # redirects followed, as by the client the SDK makes when it is given none
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=timeout,
                                 follow_redirects=True)
        self.sdk = LabelStudio(base_url=url, api_key=token, timeout=timeout, httpx_client=self.http)
        self.user = self._call("check the connection", lambda: self.sdk.users.whoami())

    def _call(self, what: str, call: Any) -> Any:
        try:
            return call()
        except httpx.TransportError as e:
            raise StageError(f"Label Studio at {self.url} does not answer ({type(e).__name__}) while trying to "
                             f"{what}; is it running? (python -m annotation.server start, or check "
                             f"LABEL_STUDIO_URL)") from None
        except ApiError as e:
            if e.status_code == 401:
                raise StageError(f"Label Studio at {self.url} refused the API token (401) while trying to {what}; "
                                 f"check LABEL_STUDIO_API_KEY (Account & Settings shows the token)") from None
            raise StageError(f"Label Studio at {self.url} answered {e.status_code} while trying to {what}: "
                             f"{str(e.body)[:300]}") from None

    def get_json(self, path: str, what: str, **params: Any) -> Any:
        def call() -> Any:
            response = self.http.get(path, params=params)
            if response.status_code >= 400:
                raise ApiError(status_code=response.status_code, body=response.text[:300])
            return response.json()

        return self._call(what, call)

    # -- projects ---------------------------------------------------------------------------------
    def find_project(self, title: str) -> Any | None:
        projects = self._call("list projects", lambda: list(self.sdk.projects.list(title=title)))
        return next((p for p in projects if p.title == title), None)

    def project(self, project_id: int) -> Any:
        def get() -> Any:
            try:
                return self.sdk.projects.get(project_id)
            except ApiError as e:
                if e.status_code == 404:
                    raise StageError(f"project {project_id} no longer exists on {self.url} (deleted since the "
                                     f"push?); run the push again (dvc repro -f push) to create it anew") from None
                raise

        return self._call(f"get project {project_id}", get)

    def create_project(self, title: str, config: str, votes: int) -> Any:
        return self._call(f"create project {title!r}", lambda: self.sdk.projects.create(
            title=title, label_config=config, maximum_annotations=votes, overlap_cohort_percentage=100,
            show_overlap_first=True, description="Faces from the fer-pipeline; one emotion per face."))

    def update_project(self, project_id: int, **fields: Any) -> Any:
        return self._call(f"update project {project_id}", lambda: self.sdk.projects.update(project_id, **fields))

    def add_local_storage(self, project_id: int, path: Path, title: str) -> None:
        """Let the labelling page read files under ``path`` (Label Studio checks a storage covers them)."""
        existing = self._call("list storages", lambda: list(self.sdk.import_storage.local.list(project=project_id)))
        if not any(Path(s.path) == path for s in existing):
            self._call("add a local storage", lambda: self.sdk.import_storage.local.create(
                project=project_id, path=str(path), title=title, use_blob_urls=False))

    # -- tasks and annotations ----------------------------------------------------------------------
    def tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        """Every task of the project, without its annotations, a page at a time."""
        page = 1
        while True:
            body = self.get_json("/api/tasks", f"list the tasks of project {project_id}", project=project_id,
                                 page=page, page_size=5000, fields="task_only")
            yield from body.get("tasks", [])
            if page * 5000 >= body.get("total", 0):
                return
            page += 1

    def task_face_ids(self, project_id: int) -> dict[str, int]:
        """face_id -> task id of the tasks already in the project."""
        return {task["data"]["face_id"]: task["id"] for task in self.tasks(project_id)}

    def task_overlaps(self, project_id: int) -> dict[int, tuple[int, bool]]:
        """task id -> (overlap, is_labeled) of every task of the project."""
        return {task["id"]: (task["overlap"], task["is_labeled"]) for task in self.tasks(project_id)}

    def set_overlap(self, task_id: int, overlap: int, is_labeled: bool) -> None:
        """Ask for ``overlap`` votes on a task; ``is_labeled`` true takes it out of the annotators' queue (Label
        Studio recomputes it only when an annotation is saved)."""
        def call() -> None:
            response = self.http.patch(f"/api/tasks/{task_id}", json={"overlap": overlap, "is_labeled": is_labeled})
            if response.status_code >= 400:
                raise ApiError(status_code=response.status_code, body=response.text[:300])

        self._call(f"set the overlap of task {task_id}", call)

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> Iterator[list[int]]:
        """Import tasks (with any annotations and predictions they carry) in chunks; yields each chunk's
        new task ids, in the order of the tasks."""
        for start in range(0, len(tasks), IMPORT_CHUNK):
            chunk = tasks[start:start + IMPORT_CHUNK]
            response = self._call(f"import tasks into project {project_id}",
                                  lambda: self.sdk.projects.import_tasks(project_id, request=chunk, return_task_ids=True))
            yield list(response.task_ids)

    def predicted_tasks(self, project_id: int, model_version: str) -> set[int]:
        """The ids of the project's tasks that carry a prediction of ``model_version``."""
        predictions = self._call(f"list the predictions of project {project_id}",
                                 lambda: self.sdk.predictions.list(project=project_id))
        return {p.task for p in predictions if p.model_version == model_version}

    def import_predictions(self, project_id: int, predictions: list[dict[str, Any]]) -> None:
        """Attach predictions (each naming its ``task``) to tasks already in the project, in chunks."""
        for start in range(0, len(predictions), IMPORT_CHUNK):
            chunk = predictions[start:start + IMPORT_CHUNK]
            self._call(f"import predictions into project {project_id}",
                       lambda: self.sdk.projects.import_predictions(project_id, request=chunk))

    def delete_tasks(self, project_id: int, task_ids: list[int]) -> None:
        """Delete tasks with their annotations: only ever for a takedown (``pipeline/takedown.py``)."""
        selected = PrepareParamsRequestRequestSelectedItemsIncluded(all_=False, included=task_ids)
        self._call(f"delete {len(task_ids)} taken-down tasks of project {project_id}",
                   lambda: self.sdk.actions.create(id="delete_tasks", project=project_id, selected_items=selected))

    def export(self, project_id: int, task_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Every task of the project, or these tasks, with every annotation, as Label Studio's JSON export.

        Tasks named by id are asked for a few hundred per request, ``EXPORT_REQUESTS`` requests at a
        time, so that a server with several worker processes exports on all of them (ids of tasks that
        are gone are left out by the server). The whole project comes in one request."""
        self.project(project_id)
        chunks: list[list[int] | None] = [None] if task_ids is None else [
            list(task_ids[i:i + EXPORT_CHUNK]) for i in range(0, len(task_ids), EXPORT_CHUNK)]

        def export_chunk(chunk: list[int] | None) -> list[dict[str, Any]]:
            ids = {} if chunk is None else {"ids[]": chunk}
            return self.get_json(f"/api/projects/{project_id}/export", f"export project {project_id}",
                                 exportType="JSON", download_all_tasks="true", **ids)

        with ThreadPoolExecutor(EXPORT_REQUESTS) as pool:
            return [task for part in pool.map(export_chunk, chunks) for task in part]

    # -- accounts ---------------------------------------------------------------------------------
    def sign_up(self, email: str, password: str) -> str:
        """Join the organisation through its invite link, as a person does in a browser; the new account's
        API token."""
        invite = self.get_json("/api/invite", "get the organisation's invite link")["invite_url"]

        def join() -> httpx.Response:
            # a session of its own: the new account's cookies, not the admin's token
            with httpx.Client(base_url=self.url, timeout=self.timeout) as browser:
                browser.get(invite)
                form = {"email": email, "password": password, "allow_newsletters": "false",
                        "csrfmiddlewaretoken": browser.cookies.get("csrftoken", "")}
                response = browser.post(invite, data=form, headers={"Referer": f"{self.url}{invite}"})
                if response.status_code != 302:
                    raise StageError(f"signing up {email} at {self.url} failed ({response.status_code}); is the "
                                     f"invite link valid?")
                return browser.get("/api/current-user/token")

        token = self._call(f"sign {email} up", join)
        if not token.is_success:
            raise StageError(f"{email} signed up at {self.url} but has no API token ({token.status_code}); "
                             f"the organisation must allow legacy tokens (LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN)")
        return token.json()["token"]

    def users(self) -> dict[int, str]:
        """user id -> email."""
        return {u.id: u.email for u in self._call("list users", lambda: list(self.sdk.users.list()))}
