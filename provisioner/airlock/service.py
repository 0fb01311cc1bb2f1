"""The airlock service (`tre airlock serve`): a JupyterHub service with a REST API and
server-rendered pages; every action is one method of `desk.Desk`.

People reach it through the hub's proxy at ``/services/airlock/`` and sign in with the hub
(OAuth 2 with PKCE, `hub_sign_in`); a notebook calls the API with its hub-issued token
(``Authorization: token $JUPYTERHUB_API_TOKEN``, which the hub grants
``access:services!service=airlock``). Only users act, never other services' tokens. A
notebook's token files, uploads and withdraws its own project's exports only
(`hub_sign_in.notebook_project`, `desk.Person.workspace`); everything else needs the
person's own sign-in. Whatever records an access (a view, a download) is a POST: nothing is
recorded by a GET that another site could make a browser send.

    GET    api/exports                          the exports you may see
    POST   api/exports                          file one: {project, context, files: [...]}
    GET    api/exports/NS/NAME                  one, with the automated checks (checkers)
    PUT    api/exports/NS/NAME/files/PATH       the author streams a declared file
    POST   api/exports/NS/NAME/view/PATH        a checker reads a quarantined file (recorded)
    POST   api/exports/NS/NAME/reviews          {votes: {PATH: {vote, comment}}}
    POST   api/exports/NS/NAME/withdraw
    POST   api/exports/NS/NAME/release          the lead
    POST   api/exports/NS/NAME/download/PATH    the lead: {url} (recorded, expires)
    POST   api/exports/NS/NAME/revoke           {reason}
    POST   api/gate/records                     a browser gate's records (`gate_records`)
    GET    health                               liveness and readiness, no sign-in

Pages (`/`, `exports/NS/NAME`) show the same and post forms (XSRF-checked) to the same
actions. Uploads stream: the body goes through a bounded queue to a thread that uploads it
in parts, so memory stays at a few parts whatever the file's size.

No one person can stall everyone (review S10): uploads run on workers of their own, a few
per person, and are cut when the client goes silent or sends slower than a floor; every
other action runs on its own workers (revokes on theirs), a few at once per person; headers
and small bodies must arrive within a bound; a person files a bounded number of exports an
hour (F20); /health answers 503 when the workers stop running (`limits`).

Errors keep the library's meaning: 400 bad input, 403 refused, 404 not found (also for an
export you may not see), 409 conflict, 429 over a person's limit, 503 try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import queue
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from tornado import web
from tornado.http1connection import HTTP1Connection
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback

from provisioner.airlock.desk import Desk, ExportView, Person, parse_votes
from provisioner.airlock.gate_records import gate_routes
from provisioner.airlock.hub_sign_in import (
    HubConfig,
    HubSignIn,
    bearer_token,
    notebook_project,
)
from provisioner.airlock.keys import normalise_export_path
from provisioner.airlock.limits import Canary, FilingWindow, PersonLimit, stalled
from provisioner.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RefusedError,
    TemporaryError,
    TreError,
)
from provisioner.models.resources import ExportFile, ExportRequest

if TYPE_CHECKING:
    from provisioner.models.settings import Settings

log = logging.getLogger("tre.airlock")
T = TypeVar("T")
TEMPLATES: Final = Path(__file__).parent / "templates"
# Bodies of everything but an upload: JSON and forms are small.
MAX_SMALL_BODY: Final = 1 << 20
# How much of an upload body tornado hands over at a time, and how many such chunks wait for
# the uploading thread: 10 MiB, a little more than a part (8 MiB), so the next part arrives
# while the last is being sent, and the bound on what one upload holds beside that part.
BODY_CHUNK_BYTES: Final = 256 << 10
UPLOAD_QUEUE_CHUNKS: Final = 40
# Workers of every action but uploads and revokes, and of revokes alone: a revoke (the way to
# stop a bad release) never waits behind anything else.
ACTION_WORKERS: Final = 16
REVOKE_WORKERS: Final = 4
REVOKES_PER_PERSON: Final = 1
_STATUS: Final = (
    (NotFoundError, 404),
    (RefusedError, 403),
    (InvalidInputError, 400),
    (ConflictError, 409),
    (TemporaryError, 503),
)


def http_status(exc: TreError) -> int:
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code
    return 500


class StreamSource:
    """A `FileSource` fed by the HTTP body: tornado puts chunks in, the uploading thread reads
    parts out. `None` ends the body; an exception object ends it with that error."""

    def __init__(self, path: str, size: int, *, idle_seconds: float = 30.0) -> None:
        self.path = path
        self.size = size
        self.idle_seconds = idle_seconds
        self.chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(UPLOAD_QUEUE_CHUNKS)
        self.failed: BaseException | None = None
        self.silent = False  # cut: no bytes for idle_seconds
        self.progress = time.monotonic()  # when the reader last took bytes (for /health)
        self.upload: asyncio.Future[Any]  # the worker's upload of this body (Serving)

    def fail(self, exc: BaseException) -> None:
        """End the body with `exc` without blocking the caller (the event loop): a reader
        waiting on an empty queue wakes, one behind a full queue sees it at its next chunk."""
        self.failed = exc
        with contextlib.suppress(queue.Full):
            self.chunks.put_nowait(exc)

    def read_parts(self, part_bytes: int) -> Iterator[bytes]:
        """Never waits more than `idle_seconds` for the next chunk: a worker is held by a
        silent client for that long at most."""
        buffer = bytearray()
        while True:
            try:
                chunk = self.chunks.get(timeout=self.idle_seconds)
            except queue.Empty:
                self.silent = True
                raise TemporaryError(
                    f"file {self.path!r}: no bytes arrived for {self.idle_seconds:g} s "
                    "(airlock_upload_idle_seconds); the upload was cut, send the file again"
                ) from None
            if self.failed is not None:
                raise self.failed
            if isinstance(chunk, BaseException):
                raise chunk
            self.progress = time.monotonic()
            if chunk is None:
                break
            buffer += chunk
            while len(buffer) >= part_bytes:
                yield bytes(buffer[:part_bytes])
                del buffer[:part_bytes]
        if buffer:
            yield bytes(buffer)


class Base(web.RequestHandler):
    """Signed in through the hub (`hub_sign_in`); errors as JSON under api/, as a page
    elsewhere."""

    @property
    def desk(self) -> Desk:
        desk: Desk = self.settings["desk"]
        return desk

    @property
    def sign_in(self) -> HubSignIn:
        sign_in: HubSignIn = self.settings["sign_in"]
        return sign_in

    async def prepare(self) -> None:
        token = bearer_token(self)
        try:
            # A request with a token is judged by the token alone, never by a cookie beside it.
            if token is not None:
                self.current_user = await self.sign_in.user_for_token(token)
            else:
                self.current_user = await self.sign_in.user_for_cookie(self)
        except TreError as exc:
            raise _http_error(exc) from exc

    def check_xsrf_cookie(self) -> None:
        # A token in a header is not an ambient credential: a page elsewhere cannot make a
        # browser send one. Cookie-signed form posts carry the XSRF token.
        if bearer_token(self) is None:
            super().check_xsrf_cookie()

    def get_login_url(self) -> str:
        if self.api:
            raise web.HTTPError(401, log_message="sign in: send a hub token (Authorization)")
        return self.sign_in.login_url(self, self.request.uri or self.settings["prefix"])

    def person(self) -> Person:
        model = self.current_user
        if not model:
            raise web.HTTPError(401)
        return Person(
            name=model["name"],
            groups=frozenset(model.get("groups") or []),
            workspace=notebook_project(model),
        )

    @property
    def serving(self) -> Serving:
        serving: Serving = self.settings["serving"]
        return serving

    async def call(self, fn: Callable[..., T], *args: Any, lane: str = "actions") -> T:
        """Run a blocking desk action on the workers of `lane` (actions or revoke), at most
        a few at once per person (429 beyond); library errors become HTTP."""
        executor, limit = self.serving.lanes[lane]
        who = self.current_user["name"] if self.current_user else ""
        if not limit.take(who):
            raise Busy(
                429,
                "Too many requests at once",
                f"{who}: {limit.limit} {lane} of yours are already running, the most one "
                f"person may have at once (airlock_calls_per_person); wait for them to finish",
                retry_after=1,
            )
        try:
            return await IOLoop.current().run_in_executor(executor, fn, *args)
        except TreError as exc:
            raise _http_error(exc) from exc
        finally:
            limit.give(who)

    @property
    def api(self) -> bool:
        return "/api/" in self.request.path

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else None
        message = message or self._reason
        if isinstance(exc, Busy):
            self.set_header("Retry-After", str(exc.retry_after))
        if self.api:
            self.finish({"error": message, "status": status_code})
        else:
            self.render("error.html", status=status_code, message=message)

    def export_json(self, view: ExportView, reports: dict[str, Any] | None) -> dict[str, Any]:
        request = view.request
        status = request.status
        return {
            "namespace": request.namespace,
            "name": request.name,
            "project": request.spec.project,
            "author": request.spec.author,
            "context": request.spec.context,
            "created": request.created_at.isoformat() if request.created_at else None,
            "phase": status.phase.value,
            "files": [
                {**f.to_wire(), "stored": view.stored.get(normalise_export_path(f.path), False)}
                for f in request.spec.files
            ],
            "reviews": [r.to_wire() for r in view.visible_reviews],
            "reviewsHidden": view.reviews_hidden,
            "checks": reports,
            "may": {
                "review": view.may_review,
                "release": view.may_release,
                "download": view.may_download,
                "viewFiles": view.may_view_files,
                "revoke": view.may_revoke,
                "upload": view.may_upload,
            },
        }

    def body_json(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise web.HTTPError(400, log_message=f"body: not JSON ({exc})") from exc
        if not isinstance(loaded, dict):
            raise web.HTTPError(400, log_message="body: a JSON object expected")
        return loaded


class Busy(web.HTTPError):
    """Over a limit (429: the person's; 503: everyone's), with the seconds after which to
    try again (Retry-After)."""

    def __init__(self, status: int, reason: str, message: str, retry_after: int) -> None:
        super().__init__(status, reason=reason, log_message=message)
        self.retry_after = retry_after


def _http_error(exc: TreError) -> web.HTTPError:
    return web.HTTPError(http_status(exc), reason=_reason(exc), log_message=str(exc))


def _reason(exc: TreError) -> str:
    # The HTTP reason phrase must be one line of Latin-1.
    return str(exc).splitlines()[0].encode("latin-1", "replace").decode("latin-1")[:200]


class Health(web.RequestHandler):
    """Liveness and readiness: 503 while the workers stall (`Serving.stalled`), so the
    cluster stops sending people here at once and restarts the service if it lasts. Answered
    on the event loop from what the watchdog saw: it never waits for a worker itself."""

    def get(self) -> None:
        serving: Serving = self.settings["serving"]
        reasons = serving.stalled()
        self.set_status(503 if reasons else 200)
        self.finish(
            {
                "ok": not reasons,
                "stalled": reasons,
                "uploads": {"running": serving.uploads.total, "workers": serving.upload_workers},
            }
        )


class OAuthCallback(Base):
    async def prepare(self) -> None:
        pass  # no one is signed in yet: this is where they become so

    async def get(self) -> None:
        self.redirect(await self.sign_in.finish_login(self))


class Exports(Base):
    @web.authenticated
    async def get(self) -> None:
        person = self.person()
        pairs = await self.call(self.desk.requests_for, person)
        rows = [_row(request) for request, _ in pairs]
        if self.api:
            self.finish({"items": rows})
        else:
            checker = person.is_checker(self.desk.settings)
            self.render("index.html", person=person, rows=rows, checker=checker)

    @web.authenticated
    async def post(self) -> None:
        person = self.person()
        body = self.body_json()
        try:
            project = str(body["project"])
            context = str(body["context"])
            files = [ExportFile.model_validate(f) for f in body["files"]]
        except (KeyError, TypeError) as exc:
            raise web.HTTPError(
                400, log_message=f"body: needs project, context and files ({exc})"
            ) from exc
        except ValueError as exc:
            raise web.HTTPError(400, log_message=f"files: {exc}") from exc
        filings: FilingWindow = self.serving.filings
        wait = filings.reserve(person.name)
        if wait:
            raise Busy(
                429,
                "Too many exports filed",
                f"{person.name}: {filings.limit} exports filed in the last hour, the most one "
                "person may file (airlock_exports_per_person_per_hour); the next may be filed "
                f"in {int(wait) + 1} s",
                retry_after=int(wait) + 1,
            )
        try:
            created = await self.call(self.desk.submit, person, project, context, files)
        except web.HTTPError:
            filings.refund(person.name)  # refused: nothing was filed
            raise
        self.set_status(201)
        self.finish({"namespace": created.namespace, "name": created.name})


class ExportDetail(Base):
    @web.authenticated
    async def get(self, namespace: str, name: str) -> None:
        person = self.person()
        view = await self.call(self.desk.readable, person, namespace, name)
        reports = None
        if view.may_view_files:
            found = await self.call(self.desk.reports, view.request)
            reports = {path: report.to_dict() for path, report in found.items()}
        if self.api:
            self.finish(self.export_json(view, reports))
        else:
            self.render(
                "export.html",
                person=person,
                view=view,
                export=self.export_json(view, reports),
                quote=urllib.parse.quote,
            )


class Action(Base):
    """POST api/exports/NS/NAME/ACTION and the pages' forms to exports/NS/NAME/ACTION."""

    @web.authenticated
    async def post(self, namespace: str, name: str, action: str) -> None:
        person = self.person()
        lane = "revoke" if action == "revoke" else "actions"
        request: ExportRequest = await self.call(
            self._request, person, namespace, name, action, lane=lane
        )
        form = self._form()
        result: dict[str, Any] = {}
        if action == "reviews":
            votes = await self.call(parse_votes, request, form)
            await self.call(self.desk.review, person, request, votes)
        elif action == "withdraw":
            await self.call(self.desk.withdraw, person, request)
        elif action == "release":
            manifest = await self.call(self.desk.release, person, request)
            result = {"released": [f["path"] for f in manifest["files"]]}
        elif action == "revoke":
            record = await self.call(
                self.desk.revoke, person, request, form.get("reason", ""), lane="revoke"
            )
            result = {"revoked": record["files"]}
        else:
            raise web.HTTPError(404)
        if self.api:
            self.finish({"namespace": namespace, "name": name, **result})
        else:
            self.redirect(self._page(namespace, name))

    def _request(self, person: Person, namespace: str, name: str, action: str) -> ExportRequest:
        if action == "withdraw":
            return self.desk.authored(person, namespace, name)
        return self.desk.readable(person, namespace, name).request

    def _form(self) -> dict[str, str]:
        if self.api:
            body = self.body_json()
            form = {k: str(v) for k, v in body.items() if isinstance(v, str)}
            for path, vote in (body.get("votes") or {}).items():
                if isinstance(vote, dict):
                    form[f"vote:{path}"] = str(vote.get("vote", ""))
                    form[f"comment:{path}"] = str(vote.get("comment", ""))
            return form
        return {k: self.get_body_argument(k) for k in self.request.body_arguments}

    def _page(self, namespace: str, name: str) -> str:
        return f"{self.settings['prefix']}exports/{namespace}/{name}"


@web.stream_request_body
class Files(Base):
    """PUT streams an upload into quarantine (nothing else: a GET is 405)."""

    source: StreamSource | None = None
    upload: asyncio.Future[Any] | None = None
    body_done = False

    async def prepare(self) -> None:
        await super().prepare()  # who is calling
        if self.request.method != "PUT":
            self._connection().set_max_body_size(0)
            return
        person = self.person() if self.current_user else None
        if person is None:
            raise web.HTTPError(401)
        self.serving.check_upload(person)  # before anything is read for it
        namespace, name, path = self.path_args
        request: ExportRequest = await self.call(self.desk.request, namespace, name)
        length = self.request.headers.get("Content-Length")
        declared = {normalise_export_path(f.path): f for f in request.spec.files}
        normal = await self.call(normalise_export_path, urllib.parse.unquote(path))
        if normal not in declared:
            raise web.HTTPError(404, log_message=f"file {normal!r} is not declared by {name}")
        size = declared[normal].size
        if length is not None and int(length) != size:
            raise web.HTTPError(
                400,
                log_message=f"file {normal!r}: the body has {length} bytes, the export "
                f"request declares {size}",
            )
        self.source = self.serving.start_upload(
            person, normal, size, functools.partial(self.desk.upload, person, request)
        )
        self.upload = self.source.upload
        self.upload.add_done_callback(self._upload_done)
        settings = self.desk.settings
        connection = self._connection()
        # Never more than declared: the connection is cut beyond it. Never slower than the
        # floor: the whole body within the idle bound plus its size at the minimum rate.
        connection.set_max_body_size(size)
        floor = settings.airlock_upload_min_bytes_per_second
        connection.set_body_timeout(settings.airlock_upload_idle_seconds + size / floor)

    def _upload_done(self, upload: asyncio.Future[Any]) -> None:
        # Cut for silence while the body is still due: close the connection, which the
        # client no longer feeds, instead of waiting out the body timeout.
        if self.source is not None and self.source.silent and not self.body_done:
            self._connection().close()

    def _connection(self) -> HTTP1Connection:
        connection = self.request.connection
        assert isinstance(connection, HTTP1Connection)
        return connection

    async def data_received(self, chunk: bytes | None) -> None:
        if self.source is None:
            return
        while True:
            if self.upload is not None and self.upload.done():
                return  # failed early (say, a refused type): put() then reports it
            try:
                self.source.chunks.put_nowait(chunk)
                return
            except queue.Full:
                await asyncio.sleep(0.002)

    @web.authenticated
    async def put(self, namespace: str, name: str, path: str) -> None:
        assert self.source is not None and self.upload is not None
        self.body_done = True
        await self.data_received(None)  # the end of the body
        try:
            stored = await self.upload
        except TreError as exc:
            raise _http_error(exc) from exc
        self.finish({"path": stored.path, "size": stored.size, "sha256": stored.sha256})

    def on_connection_close(self) -> None:
        # The client went away mid-upload, or sent too slowly (the body timeout closed the
        # connection): end the thread's read with an error, so the multipart upload is
        # aborted and nothing half-made is kept.
        if self.source is not None and self.upload is not None and not self.upload.done():
            self.source.fail(
                InvalidInputError(
                    "the upload was interrupted (the connection closed, or the body came "
                    "slower than airlock_upload_min_bytes_per_second); send the file again"
                )
            )


class View(Base):
    """POST: a checker reads a quarantined file; the view is recorded first. A POST, so that
    no link, image or navigation from another site records a view (a page's form carries the
    XSRF token; a GET is 405)."""

    @web.authenticated
    async def post(self, namespace: str, name: str, path: str) -> None:
        person = self.person()
        request = await self.call(self.desk.request, namespace, name)
        chunks = await self.call(self.desk.view_file, person, request, urllib.parse.unquote(path))
        # Shown, never run by the browser: as plain text or as a download.
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "default-src 'none'; sandbox")
        if self.get_argument("download", None):
            filename = normalise_export_path(path).rsplit("/", 1)[-1].replace('"', "")
            self.set_header("Content-Disposition", f'attachment; filename="{filename}"')
        while True:
            chunk = await self.call(next, chunks, None)
            if chunk is None:
                break
            self.write(chunk)
            await self.flush()
        self.finish()


class Download(Base):
    """POST: the lead gets a short-lived link to a released file; the download is recorded
    first. A POST for the same reason as `View`."""

    @web.authenticated
    async def post(self, namespace: str, name: str, path: str) -> None:
        person = self.person()
        request = await self.call(self.desk.request, namespace, name)
        url = await self.call(self.desk.download, person, request, urllib.parse.unquote(path))
        if self.api:
            expiry = self.desk.settings.airlock_link_expiry_seconds
            self.finish({"url": url, "expiresInSeconds": expiry})
        else:
            self.redirect(url, status=303)


def _row(request: ExportRequest) -> dict[str, Any]:
    return {
        "namespace": request.namespace,
        "name": request.name,
        "project": request.spec.project,
        "author": request.spec.author,
        "phase": request.status.phase.value,
        "files": len(request.spec.files),
        "created": request.created_at.isoformat() if request.created_at else None,
    }


class Serving:
    """The workers and the limits of one airlock process: actions, revokes and uploads each
    on workers of their own; per person, a few running actions, a few uploads and a bounded
    number of filings an hour; the canaries that tell /health whether the workers still run.
    Used from the event loop only (`limits`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        actions = ThreadPoolExecutor(ACTION_WORKERS, thread_name_prefix="airlock")
        revokes = ThreadPoolExecutor(REVOKE_WORKERS, thread_name_prefix="airlock-revoke")
        self.lanes: dict[str, tuple[ThreadPoolExecutor, PersonLimit]] = {
            "actions": (actions, PersonLimit(settings.airlock_calls_per_person)),
            "revoke": (revokes, PersonLimit(REVOKES_PER_PERSON)),
        }
        self.upload_workers = settings.airlock_upload_workers
        self.upload_pool = ThreadPoolExecutor(
            self.upload_workers, thread_name_prefix="airlock-upload"
        )
        self.uploads = PersonLimit(settings.airlock_uploads_per_person)
        self.streams: set[StreamSource] = set()
        self.filings = FilingWindow(settings.airlock_exports_per_person_per_hour)
        self.canaries = [Canary("action", actions), Canary("revoke", revokes)]

    def check_upload(self, person: Person) -> None:
        """Refuse an upload now over the limits: 429 over the person's uploads, 503 when every
        upload worker is busy (never queued, where it would hold its connection and its
        buffer while waiting)."""
        if self.uploads.held[person.name] >= self.uploads.limit:
            raise Busy(
                429,
                "Too many uploads at once",
                f"{person.name}: {self.uploads.limit} uploads of yours are already in "
                "progress, the most one person may have at once (airlock_uploads_per_person); "
                "send this file when one has finished",
                retry_after=self.settings.airlock_upload_idle_seconds,
            )
        if self.uploads.total >= self.upload_workers:
            raise Busy(
                503,
                "All upload workers are busy",
                f"all {self.upload_workers} upload workers are busy (airlock_upload_workers); "
                "send the file again shortly",
                retry_after=self.settings.airlock_upload_idle_seconds,
            )

    def start_upload(
        self, person: Person, path: str, size: int, upload: Callable[[StreamSource], Any]
    ) -> StreamSource:
        """Start a worker on `upload` of the body of `path`, within the limits
        (`check_upload`)."""
        self.check_upload(person)
        self.uploads.take(person.name)
        source = StreamSource(path, size, idle_seconds=self.settings.airlock_upload_idle_seconds)
        self.streams.add(source)
        # Whatever the desk raises reaches the handler through the future.
        source.upload = asyncio.ensure_future(
            IOLoop.current().run_in_executor(self.upload_pool, upload, source)
        )

        def done(_: asyncio.Future[Any]) -> None:
            self.uploads.give(person.name)
            self.streams.discard(source)

        source.upload.add_done_callback(done)
        return source

    def watch(self) -> PeriodicCallback:
        """Keep a no-op task in the action and revoke workers' queues (`limits.Canary`)."""

        def tick() -> None:
            for canary in self.canaries:
                canary.tick()

        watchdog = PeriodicCallback(tick, 1000)
        watchdog.start()
        return watchdog

    def stalled(self) -> list[str]:
        return stalled(
            self.canaries,
            [s.progress for s in self.streams],
            self.upload_workers,
            bound=self.settings.airlock_stall_seconds,
            upload_idle=self.settings.airlock_upload_idle_seconds,
            now=time.monotonic(),
        )


def make_app(
    desk: Desk, sign_in: HubSignIn, cookie_secret: bytes, serving: Serving | None = None
) -> web.Application:
    """The tornado application under the service's prefix (JUPYTERHUB_SERVICE_PREFIX)."""
    prefix = sign_in.config.prefix
    names = r"([a-z0-9][-a-z0-9]*)"
    routes: list[Any] = [
        (prefix + r"health", Health),
        (prefix + r"oauth_callback", OAuthCallback),
        (prefix + r"(?:api/exports)?", Exports),
        (prefix + rf"(?:api/)?exports/{names}/{names}", ExportDetail),
        (prefix + rf"(?:api/)?exports/{names}/{names}/(reviews|withdraw|release|revoke)", Action),
        (prefix + rf"(?:api/)?exports/{names}/{names}/files/(.+)", Files),
        (prefix + rf"(?:api/)?exports/{names}/{names}/view/(.+)", View),
        (prefix + rf"(?:api/)?exports/{names}/{names}/download/(.+)", Download),
        *gate_routes(prefix, desk.kube, desk.settings),
    ]
    return web.Application(
        routes,
        desk=desk,
        sign_in=sign_in,
        prefix=prefix,
        serving=serving or Serving(desk.settings),
        template_path=str(TEMPLATES),
        cookie_secret=cookie_secret,
        # Form posts signed in by cookie carry the XSRF token (`Base.check_xsrf_cookie`).
        xsrf_cookies=True,
        xsrf_cookie_kwargs={"path": prefix, "httponly": True, "samesite": "Strict"},
    )


def serve(desk: Desk, settings: Settings, *, host: str, port: int, cookie_secret: bytes) -> None:
    """Run until interrupted. The JUPYTERHUB_* variables the hub gives a service (API URL,
    token, client id, service prefix) configure the sign-in."""
    sign_in = HubSignIn(HubConfig.from_environment(os.environ))
    prefix = sign_in.config.prefix
    serving = Serving(settings)
    app = make_app(desk, sign_in, cookie_secret, serving)
    serving.watch()
    # Bodies are read into memory up to this size: only uploads stream, above it.
    # no_keep_alive: the hub's proxy reuses idle connections, and one the server closes
    # while the proxy sends on it ends the request with 503 ECONNRESET (seen here with a POST).
    # A connection per request costs a local handshake; it never loses a request.
    # Headers and small bodies arrive within airlock_body_timeout_seconds or the connection
    # is closed (an upload sets its own bound: `Files.prepare`).
    server = HTTPServer(
        app,
        max_body_size=MAX_SMALL_BODY,
        chunk_size=BODY_CHUNK_BYTES,
        xheaders=True,
        no_keep_alive=True,
        idle_connection_timeout=settings.airlock_body_timeout_seconds,
        body_timeout=settings.airlock_body_timeout_seconds,
    )
    server.listen(port, address=host)
    log.info("airlock listening on http://%s:%d%s", host, port, prefix)
    IOLoop.current().start()
