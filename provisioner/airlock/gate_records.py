"""The browser gates' records, taken in by the airlock and filed as BrowserActivity objects.

Every notebook pod runs a browser gate (images/gate) that records each file served to the
browser, each upload, each refusal and each budget crossing, and counts what the person's
browser received today. It sends them in batches:

    POST api/gate/records     Authorization: Bearer <the pod's token, audience tre-gate>
    {"user": ..., "project": ..., "usage": {"day", "content", "other"},
     "records": [{"seq", "event", "at", ...}]}          ->  200 {"acked": <highest seq>}

The token is the pod's own ServiceAccount token for the gate's audience, mounted into the
gate's container only (the pod admission policy refuses any other container that mounts
it). A TokenReview tells the airlock which pod sent the batch; the namespace is the project's,
whatever the body says. The airlock files the batch as one BrowserActivity in that namespace
(only the airlock may: `tre-browseractivity-airlock-only`); the controller audits each record
once, keyed by the pod's uid and the record's `seq`, updates the Workspace's count of the day,
and deletes the batch. A batch sent twice is the same object (its name is a hash of what it
holds), so a retry after a lost answer files nothing new.

The work runs on a small pool of its own: however many gates send at once, people's actions
in the airlock never wait behind them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError
from tornado import web
from tornado.ioloop import IOLoop

from provisioner.errors import ConflictError, InvalidInputError, RefusedError, TreError
from provisioner.kube.api import Kube
from provisioner.models.resources import (
    MAX_BROWSER_FIELD,
    MAX_BROWSER_RECORDS,
    BrowserActivity,
    BrowserActivitySpec,
)
from provisioner.planning import names
from provisioner.planning.notebook_pods import GATE_TOKEN_AUDIENCE

if TYPE_CHECKING:
    from provisioner.models.settings import Settings

TOKEN_REVIEWS_PATH: Final = "/apis/authentication.k8s.io/v1/tokenreviews"  # noqa: S105 (a path)
POD_NAME_EXTRA: Final = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA: Final = "authentication.kubernetes.io/pod-uid"
_SERVICE_ACCOUNT: Final = "system:serviceaccount:"
# What a record keeps besides seq, event and at (the model's bound, 16, is the hard limit).
_MAX_FIELDS: Final = 12
_POOL_WORKERS: Final = 4


@dataclass(frozen=True)
class GatePod:
    """The pod a gate's token belongs to, as the API server vouches for it."""

    namespace: str
    project: str
    pod: str
    pod_uid: str


def gate_pod(review: Mapping[str, Any], settings: Settings) -> GatePod:
    """The pod of a TokenReview's answer, or RefusedError: the token must be a pod-bound
    ServiceAccount token of a project namespace, for the gate's audience."""
    status = review.get("status") or {}
    if not status.get("authenticated"):
        raise RefusedError(
            "the token is not a valid browser gate token: "
            + str(status.get("error") or "not authenticated")
        )
    if GATE_TOKEN_AUDIENCE not in (status.get("audiences") or []):
        raise RefusedError(f"the token is not for audience {GATE_TOKEN_AUDIENCE}")
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    if not username.startswith(_SERVICE_ACCOUNT):
        raise RefusedError(f"{username or 'the caller'} is not a pod's ServiceAccount")
    namespace = username.removeprefix(_SERVICE_ACCOUNT).split(":", 1)[0]
    extra = user.get("extra") or {}
    pod = (extra.get(POD_NAME_EXTRA) or [""])[0]
    pod_uid = (extra.get(POD_UID_EXTRA) or [""])[0]
    if not pod or not pod_uid:
        raise RefusedError("the token is not bound to a pod: only a browser gate's is taken")
    project = names.project_of_namespace(namespace, settings)
    if project is None:
        raise RefusedError(f"namespace {namespace} is not a project's: no browser gate runs there")
    return GatePod(namespace, project, pod, pod_uid)


def activity_from_batch(body: Mapping[str, Any], pod: GatePod) -> BrowserActivity:
    """The BrowserActivity filing one batch of `pod`'s gate, or InvalidInputError naming what
    is wrong. Values are kept as text and cut to the model's bound; the object's name is a
    hash of the pod and the batch, so the same batch sent again is the same object."""
    if not isinstance(body, Mapping):
        raise InvalidInputError("the body must be a JSON object")
    if body.get("project") not in (None, pod.project):
        raise RefusedError(
            f"project: the gate of pod {pod.pod} belongs to project {pod.project}, "
            f"not {body.get('project')!r}"
        )
    records = body.get("records") or []
    if not isinstance(records, list) or len(records) > MAX_BROWSER_RECORDS:
        raise InvalidInputError(f"records: a list of at most {MAX_BROWSER_RECORDS} records")
    try:
        spec = BrowserActivitySpec.model_validate(
            {
                "project": pod.project,
                "user": body.get("user"),
                "pod": pod.pod,
                "podUid": pod.pod_uid,
                "usage": {"user": body.get("user"), **(body.get("usage") or {})},
                "records": [_record(r) for r in records],
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidInputError(f"{where}: {first['msg']}") from None
    canonical = json.dumps(spec.to_wire(), sort_keys=True).encode()
    digest = hashlib.sha256(canonical).hexdigest()[:16]
    return BrowserActivity(
        name=f"{pod.pod_uid}-{digest}".lower(), namespace=pod.namespace, spec=spec
    )


def _record(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise InvalidInputError("records: each record is a JSON object")
    fields = {
        str(key)[:40]: _text(value)[:MAX_BROWSER_FIELD]
        for key, value in raw.items()
        if key not in ("seq", "event", "at", "user", "project")
    }
    kept = dict(sorted(fields.items())[:_MAX_FIELDS])
    return {"seq": raw.get("seq"), "event": raw.get("event"), "at": raw.get("at"), "fields": kept}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class GateRecords:
    """Takes one batch: checks the token with the API server, files the batch."""

    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=_POOL_WORKERS, thread_name_prefix="gate")

    def review(self, token: str) -> GatePod:
        answer = self.kube.request(
            "POST",
            TOKEN_REVIEWS_PATH,
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token, "audiences": [GATE_TOKEN_AUDIENCE]},
            },
            what="review a browser gate's token",
        )
        return gate_pod(answer, self.settings)

    def file(self, token: str, body: Mapping[str, Any]) -> int:
        """File the batch; the highest seq it holds (0 for a batch of counts only)."""
        pod = self.review(token)
        activity = activity_from_batch(body, pod)
        # AlreadyExists: the same batch, filed before its answer was lost
        with contextlib.suppress(ConflictError):
            self.kube.create(activity.to_object())
        return max((r.seq for r in activity.spec.records), default=0)


class GateRecordsHandler(web.RequestHandler):
    """`POST api/gate/records`: a gate's token, never a person's sign-in."""

    def initialize(self, records: GateRecords) -> None:
        self.records = records

    def check_xsrf_cookie(self) -> None:
        # No cookie is read here: the token in the header is the only credential.
        return

    async def post(self) -> None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise web.HTTPError(401, reason="a browser gate's token is required")
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, reason="the body is not JSON") from None
        try:
            acked = await IOLoop.current().run_in_executor(
                self.records.pool, self.records.file, token.strip(), body
            )
        except TreError as exc:
            status = 403 if isinstance(exc, RefusedError) else 400
            if not isinstance(exc, (RefusedError, InvalidInputError)):
                status = 503
            self.set_status(status)
            self.finish({"error": str(exc)[:500]})
            return
        self.finish({"acked": acked})


def gate_routes(prefix: str, kube: Kube, settings: Settings) -> list[Any]:
    """The route of `make_app` for the gates' records."""
    records = GateRecords(kube, settings)
    return [(prefix + r"api/gate/records", GateRecordsHandler, {"records": records})]
