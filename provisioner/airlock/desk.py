"""The airlock's desk: every action a person takes on an export, without HTTP.

The service (`provisioner.airlock.service`) authenticates a person through JupyterHub and
calls one method here per request. Two identities carry the calls to the API server:

- **the person**, through impersonation of the airlock's own credential, for every change of
  the ExportRequest itself (filing it, appending a review, withdrawing it), with the user
  extra `tre.ucloud.org/via: airlock` that only the airlock may assert. The admission
  policies then judge the person: only a member files in their own name, only an output
  checker who is neither the author nor a member reviews, once; and a person's change
  without that extra (their own `kubectl`) is refused, so people neither change nor read
  exports except through the airlock (they hold no read on them at all);
- **the airlock**, for what only it does: reading requests to show them, and writing the
  status fields it owns (Released with its release record, Revoked with its reason, and one
  access record per file view and download, which the controller turns into audit events).

What the API server cannot see is decided here, fail closed:

- quarantined bytes are shown to output checkers only, never to the project's own people
  (the bytes in quarantine are unreviewed: showing them outside the workspace would be an
  export without review); every view is recorded *before* a byte is served;
- while an export is under review a checker sees only their own review, and the project's
  people see none (independent reviews);
- only the project's lead releases and downloads: its owner, while a member of its Ready
  workspace (review 3, S9); a download link is issued only after the download is recorded;
- nobody who has ever been the project's member, lead or owner sees its quarantined files or
  reviews its exports (S8), and nobody reviews while the workspace is not Ready.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from provisioner.airlock.checks import CheckRules, FileReport, type_refusal
from provisioner.airlock.datasets import compare_datasets
from provisioner.airlock.keys import ExportRef, normalise_export_path
from provisioner.airlock.quarantine import (
    FileSource,
    QuarantinedFile,
    inspect_quarantined,
    object_chunks,
    quarantine_file,
)
from provisioner.airlock.release import (
    download_link,
    manifest_sha256,
    release_export,
    revoke_release,
)
from provisioner.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RefusedError,
)
from provisioner.kube.api import Kube
from provisioner.kube.resources import EXPORT_REQUESTS, WORKSPACES
from provisioner.models.resources import (
    ExportFile,
    ExportFileKind,
    ExportPhase,
    ExportRequest,
    FileVote,
    Workspace,
    WorkspacePhase,
)
from provisioner.planning.approvals import acting_lead, project_people
from provisioner.planning.names import (
    AIRLOCK_VIA_EXTRA,
    AIRLOCK_VIA_VALUE,
    AIRLOCK_WORKSPACE_EXTRA,
    namespace_name,
)
from provisioner.storage.s3 import get_object, put_object, translated_errors

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from provisioner.kube.http import HttpClient
    from provisioner.models.settings import Settings

API_VERSION: Final = "tre.ucloud.org/v1alpha1"
# Phases in which an export is still under review: reviews stay hidden from each other.
UNDER_REVIEW: Final = (ExportPhase.SUBMITTED,)
FIELD_MANAGER: Final = "tre-airlock"
# A status write the airlock retries when someone else wrote the object meanwhile.
STATUS_ATTEMPTS: Final = 5


@dataclass(frozen=True)
class Person:
    """Who acts, as JupyterHub identified them (never what a request body claims).

    `workspace` is the project of the notebook server whose token made the call (one named
    server per project, named after it), None for the person's own sign-in. Such a token is
    the notebook's, and whatever runs in the notebook holds it: it files, uploads and
    withdraws that project's exports, and nothing else, never with the checkers' role.
    """

    name: str
    groups: frozenset[str] = frozenset()
    workspace: str | None = None

    def is_checker(self, settings: Settings) -> bool:
        return self.workspace is None and settings.output_checker_group in self.groups

    def signed_in(self, what: str) -> None:
        """Refuse `what` to a notebook's token: it is for the person's own sign-in."""
        if self.workspace is not None:
            raise RefusedError(
                f"{what}: not with a notebook's token, which files, uploads and withdraws "
                f"exports of its own project ({self.workspace}) only; do this on the airlock's "
                "page in your browser (signed in through the hub), never from a workspace"
            )

    def within_workspace(self, request: ExportRequest) -> None:
        """Refuse a notebook's token an export of another project."""
        if self.workspace is not None and request.spec.project != self.workspace:
            raise RefusedError(
                f"export request {request.name} is of project {request.spec.project}; this "
                f"notebook's token acts for project {self.workspace} only"
            )


@dataclass(frozen=True)
class ExportView:
    """An export as one person may see it."""

    request: ExportRequest
    workspace: Workspace | None
    stored: Mapping[str, bool]  # path -> in quarantine
    reviews_hidden: int  # reviews that exist but this person may not see yet
    visible_reviews: tuple[Any, ...]
    may_review: bool
    may_release: bool
    may_download: bool
    may_view_files: bool
    may_revoke: bool
    may_upload: bool


def is_project_person(person: Person, request: ExportRequest, workspace: Workspace | None) -> bool:
    """The author, or anyone who has been a member, lead or owner of the project the export
    comes from (former ones too: review 3, S8)."""
    if person.name == request.spec.author:
        return True
    if workspace is None:
        return False
    return person.name in project_people(workspace.spec)


def may_read(
    person: Person, request: ExportRequest, workspace: Workspace | None, settings: Settings
) -> bool:
    return person.is_checker(settings) or is_project_person(person, request, workspace)


def may_view_files(
    person: Person, request: ExportRequest, workspace: Workspace | None, settings: Settings
) -> bool:
    """Quarantined bytes: output checkers who are not the project's own people."""
    return person.is_checker(settings) and not is_project_person(person, request, workspace)


def is_lead(person: Person, workspace: Workspace | None) -> bool:
    """The project's owner, while a member of its Ready workspace (review 3, S9)."""
    return (
        workspace is not None and acting_lead(workspace.spec, workspace.status.phase) == person.name
    )


def may_review(
    person: Person, request: ExportRequest, workspace: Workspace | None, settings: Settings
) -> bool:
    """An output checker who has never been the project's, while its workspace is Ready
    (the API server holds the same rule)."""
    return (
        may_view_files(person, request, workspace, settings)
        and workspace is not None
        and workspace.status.phase is WorkspacePhase.READY
    )


def visible_reviews(
    person: Person, request: ExportRequest, settings: Settings
) -> tuple[tuple[Any, ...], int]:
    """The reviews `person` may see now, and how many others exist (hidden)."""
    reviews = tuple(request.spec.reviews)
    if request.status.phase not in UNDER_REVIEW:
        return reviews, 0
    own = tuple(r for r in reviews if r.by == person.name)
    return own, len(reviews) - len(own)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _stamp(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


class Desk:
    """The airlock's actions. `kube`: the airlock's own identity (light client, so it can
    impersonate per call); `s3`: its S3 client (quarantine and egress buckets, and the
    datasets' fingerprints: never a dataset's bucket)."""

    def __init__(
        self,
        kube: Kube,
        s3: S3Client,
        settings: Settings,
        *,
        clock: Callable[[], dt.datetime] = _now,
        impersonate: Callable[[Person], Kube] | None = None,
    ) -> None:
        self.kube = kube
        self.s3 = s3
        self.settings = settings
        self.clock = clock
        self._impersonate = impersonate or self._impersonated
        self.rules = CheckRules.from_settings(settings)

    # --- identities ---------------------------------------------------------------------------

    def _impersonated(self, person: Person) -> Kube:
        api: HttpClient = self.kube.api
        # Only the checkers' group is ever asserted, and only when the hub says so: the
        # airlock's RBAC allows impersonating no other group.
        groups = [self.settings.output_checker_group] if person.is_checker(self.settings) else []
        extra = {AIRLOCK_VIA_EXTRA: AIRLOCK_VIA_VALUE}
        if person.workspace is not None:
            # the API server, too, keeps a notebook's token to its own project
            extra[AIRLOCK_WORKSPACE_EXTRA] = person.workspace
        impersonated = api.with_impersonation(person.name, groups, extra=extra)
        return Kube(impersonated, self.kube.field_manager)

    def as_person(self, person: Person) -> Kube:
        return self._impersonate(person)

    # --- reads --------------------------------------------------------------------------------

    def request(self, namespace: str, name: str) -> ExportRequest:
        obj = self.kube.get(EXPORT_REQUESTS, name, namespace)
        if obj is None:
            raise NotFoundError(f"export request {namespace}/{name} does not exist")
        return ExportRequest.from_object(obj)

    def workspace(self, project: str) -> Workspace | None:
        obj = self.kube.get(WORKSPACES, project)
        return Workspace.from_object(obj) if obj is not None else None

    def requests_for(self, person: Person) -> list[tuple[ExportRequest, Workspace | None]]:
        """Every export `person` may see, newest first."""
        person.signed_in("list exports")
        found = []
        workspaces: dict[str, Workspace | None] = {}
        for obj in self.kube.list(EXPORT_REQUESTS):
            try:
                request = ExportRequest.from_object(obj)
            except ValueError:
                continue  # one unparsable object hides itself, never the others
            project = request.spec.project
            if project not in workspaces:
                workspaces[project] = self.workspace(project)
            if may_read(person, request, workspaces[project], self.settings):
                found.append((request, workspaces[project]))
        found.sort(key=lambda pair: pair[0].created_at or dt.datetime.min.replace(tzinfo=dt.UTC))
        return list(reversed(found))

    def readable(self, person: Person, namespace: str, name: str) -> ExportView:
        """The export as `person` may see it; NotFoundError when they may not see it at all
        (the same answer as for an export that does not exist: no probing of names)."""
        person.signed_in(f"show export request {namespace}/{name}")
        request = self.request(namespace, name)
        workspace = self.workspace(request.spec.project)
        if not may_read(person, request, workspace, self.settings):
            raise NotFoundError(f"export request {namespace}/{name} does not exist")
        reviews, hidden = visible_reviews(person, request, self.settings)
        phase = request.status.phase
        checker = may_view_files(person, request, workspace, self.settings)
        stored = self.stored(request)
        reviewed = any(r.by == person.name for r in request.spec.reviews)
        return ExportView(
            request=request,
            workspace=workspace,
            stored=stored,
            reviews_hidden=hidden,
            visible_reviews=reviews,
            may_review=may_review(person, request, workspace, self.settings)
            and phase in UNDER_REVIEW
            and not reviewed
            and all(stored.values()),
            may_release=is_lead(person, workspace) and phase is ExportPhase.APPROVED,
            may_download=is_lead(person, workspace) and phase is ExportPhase.RELEASED,
            may_view_files=checker,
            may_revoke=(checker or is_lead(person, workspace)) and phase is ExportPhase.RELEASED,
            may_upload=person.name == request.spec.author
            and phase in UNDER_REVIEW
            and not all(stored.values()),
        )

    def authored(self, person: Person, namespace: str, name: str) -> ExportRequest:
        """The export its author acts on (withdraw): for a notebook's token only one of its
        own project's, its person's own, else not found (no probing of names)."""
        if person.workspace is None:
            return self.readable(person, namespace, name).request
        request = self.request(namespace, name)
        if request.spec.project != person.workspace or request.spec.author != person.name:
            raise NotFoundError(f"export request {namespace}/{name} does not exist")
        return request

    def stored(self, request: ExportRequest) -> dict[str, bool]:
        """Which declared files have arrived in quarantine."""
        ref = ExportRef.of(request)
        prefix = ref.files_prefix
        bucket = self.settings.airlock_quarantine_bucket
        present: set[str] = set()
        paginator = self.s3.get_paginator("list_objects_v2")
        with translated_errors(f"list s3://{bucket}/{prefix}"):
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                present.update(entry["Key"] for entry in page.get("Contents", []))
        return {
            normalise_export_path(f.path): ref.file_key(f.path) in present
            for f in request.spec.files
        }

    def reports(self, request: ExportRequest) -> dict[str, FileReport]:
        """The automated checks over every quarantined file (shown to reviewers, recorded in
        the release manifest). Each file is checked once, when a reviewer first needs it, and
        the report is kept beside it in quarantine: one streaming read per file, not one per
        page view and another at release."""
        ref = ExportRef.of(request)
        bucket = self.settings.airlock_quarantine_bucket
        stored = self.stored(request)
        found: dict[str, FileReport] = {}
        missing = []
        for declared in request.spec.files:
            path = normalise_export_path(declared.path)
            if not stored[path]:
                continue
            kept = self._kept_report(bucket, ref.report_key(path), declared)
            if kept is None:
                missing.append(declared)
            else:
                found[path] = kept
        if missing:
            workspace = self.workspace(request.spec.project)
            datasets = workspace.spec.datasets if workspace is not None else []
            comparison = compare_datasets(
                self.s3,
                self.settings.dataset_fingerprint_bucket,
                datasets,
                {f.size for f in missing},
            )
            for declared in missing:
                report = inspect_quarantined(
                    self.s3, bucket, ref, declared, rules=self.rules, comparison=comparison
                )
                body = json.dumps(report.to_dict(), sort_keys=True).encode()
                # Create-only: a concurrent view may have kept the same report first.
                with contextlib.suppress(ConflictError):
                    put_object(
                        self.s3,
                        bucket,
                        ref.report_key(declared.path),
                        body,
                        content_type="application/json",
                        if_none_match=True,
                    )
                found[report.path] = report
        return {path: found[path] for path in sorted(found)}

    def _kept_report(self, bucket: str, key: str, declared: ExportFile) -> FileReport | None:
        try:
            kept = FileReport.from_dict(json.loads(get_object(self.s3, bucket, key).body))
        except NotFoundError:
            return None
        # A report of other bytes (cannot happen: quarantined objects are create-only) is
        # never shown: check again.
        if (kept.size, kept.sha256) != (declared.size, declared.sha256):
            return None
        return kept

    # --- the author -----------------------------------------------------------------------------

    def submit(
        self, person: Person, project: str, context: str, files: Sequence[ExportFile]
    ) -> ExportRequest:
        """File an export in `person`'s name (the API server checks they are a member of the
        Ready workspace of `project`). A file of a type the airlock does not take is refused
        before anything is filed (its bytes are checked again as they arrive). A notebook's
        token files for its own project only."""
        if person.workspace is not None and project != person.workspace:
            raise RefusedError(
                f"project {project}: this notebook's token files exports of project "
                f"{person.workspace} only; submit from the notebook of {project}"
            )
        for declared in files:
            refusal = type_refusal(declared.path, b"", self.settings.airlock_allowed_types)
            if refusal:
                raise InvalidInputError(refusal)
        body = {
            "apiVersion": API_VERSION,
            "kind": "ExportRequest",
            "metadata": {"generateName": "export-", "namespace": namespace_name(project)},
            "spec": {
                "project": project,
                "author": person.name,
                "files": [f.to_wire() for f in files],
                "context": context,
            },
        }
        created = self.as_person(person).create(body)
        return ExportRequest.from_object(created)

    def upload(self, person: Person, request: ExportRequest, source: FileSource) -> QuarantinedFile:
        """Stream one declared file of `request` into quarantine (its author only, while it is
        under review)."""
        person.within_workspace(request)
        if person.name != request.spec.author:
            raise RefusedError(
                f"export request {request.name}: only its author {request.spec.author} "
                "uploads its files"
            )
        if request.status.phase not in UNDER_REVIEW:
            raise RefusedError(
                f"export request {request.name}: is {request.status.phase.value}; files are "
                "uploaded only while it is Submitted"
            )
        declared = {normalise_export_path(f.path): f for f in request.spec.files}
        path = normalise_export_path(source.path)
        if path not in declared:
            raise NotFoundError(
                f"file {path!r} is not declared by export request {request.name}; declared: "
                f"{', '.join(sorted(declared))}"
            )
        return quarantine_file(
            self.s3,
            self.settings.airlock_quarantine_bucket,
            ExportRef.of(request),
            declared[path],
            source,
            allowed_types=self.settings.airlock_allowed_types,
        )

    def withdraw(self, person: Person, request: ExportRequest) -> ExportRequest:
        person.within_workspace(request)

        def change(obj: dict[str, Any]) -> None:
            obj["spec"]["withdrawn"] = True

        return self._update_as(person, request, change)

    # --- output checkers --------------------------------------------------------------------------

    def view_file(self, person: Person, request: ExportRequest, path: str) -> Iterator[bytes]:
        """The quarantined bytes of `path`, for an output checker; the view is recorded first
        (no record, no bytes)."""
        person.signed_in(f"view the files of export request {request.name}")
        workspace = self.workspace(request.spec.project)
        if not may_view_files(person, request, workspace, self.settings):
            raise RefusedError(
                f"{person.name} may not open the files of export request {request.name}: only "
                f"output checkers ({self.settings.output_checker_group}) who are not the "
                "project's own people see quarantined files"
            )
        normal = self._declared_path(request, path)
        ref = ExportRef.of(request)
        key = ref.file_key(normal)
        self.record_access(request, person, "view", normal)
        return object_chunks(self.s3, self.settings.airlock_quarantine_bucket, key)

    def review(
        self, person: Person, request: ExportRequest, votes: Sequence[FileVote]
    ) -> ExportRequest:
        """Append `person`'s review (one vote per file); the API server checks who may, and
        so does this first, for a clear answer."""
        person.signed_in(f"review export request {request.name}")
        if not may_review(person, request, self.workspace(request.spec.project), self.settings):
            raise RefusedError(
                f"{person.name} may not review export request {request.name}: only output "
                f"checkers ({self.settings.output_checker_group}) who have never been the "
                "project's members, lead or owner review, while its workspace is Ready"
            )
        entry = {
            "by": person.name,
            "at": _stamp(self.clock()),
            "votes": [v.to_wire() for v in votes],
        }

        def change(obj: dict[str, Any]) -> None:
            obj["spec"]["reviews"] = [*obj["spec"].get("reviews", []), entry]

        return self._update_as(person, request, change)

    # --- the lead ---------------------------------------------------------------------------------

    def release(self, person: Person, request: ExportRequest) -> dict[str, Any]:
        """Release an Approved export (the project's lead): copy, verify, manifest, then the
        status Released. Rerun after any failure, it completes the same release once."""
        person.signed_in(f"release export request {request.name}")
        workspace = self.workspace(request.spec.project)
        if not is_lead(person, workspace) or workspace is None:
            raise RefusedError(
                f"{person.name} may not release export request {request.name}: only the "
                "project's lead does, while a member of its Ready workspace"
            )
        if request.status.phase is ExportPhase.RELEASED:
            manifest = release_export(
                self.s3,
                self.settings,
                request,
                workspace,
                {},
                released_by=person.name,
                now=self.clock(),
            )
            return manifest
        if request.status.phase is not ExportPhase.APPROVED:
            raise RefusedError(
                f"export request {request.name}: is {request.status.phase.value}; only an "
                "Approved request is released (two independent output checkers approve first)"
            )
        manifest = release_export(
            self.s3,
            self.settings,
            request,
            workspace,
            self.reports(request),
            released_by=person.name,
            now=self.clock(),
        )
        self._record_once(
            request,
            ExportPhase.RELEASED,
            "release",
            {
                "by": manifest["releasedBy"],
                "at": manifest["releasedAt"],
                "manifestSha256": manifest_sha256(manifest),
                "files": len(manifest["files"]),
            },
        )
        return manifest

    def download(self, person: Person, request: ExportRequest, path: str) -> str:
        """A short-lived link to one released file, for the lead; recorded first."""
        person.signed_in(f"download from export request {request.name}")
        workspace = self.workspace(request.spec.project)
        if not is_lead(person, workspace):
            raise RefusedError(
                f"{person.name} may not download from export request {request.name}: only "
                "the project's lead does, while a member of its Ready workspace"
            )
        if request.status.phase is not ExportPhase.RELEASED:
            raise RefusedError(
                f"export request {request.name}: is {request.status.phase.value}; only a "
                "Released request is downloaded"
            )
        normal = self._declared_path(request, path)
        outputs = {
            normalise_export_path(f.path)
            for f in request.spec.files
            if f.kind is ExportFileKind.OUTPUT
        }
        if normal not in outputs:
            raise NotFoundError(
                f"file {normal!r} was not released by export request {request.name}: it is a "
                "supporting file, shown to reviewers and never released"
            )
        self.record_access(request, person, "download", normal)
        return download_link(self.s3, self.settings, ExportRef.of(request), normal)

    def revoke(self, person: Person, request: ExportRequest, reason: str) -> dict[str, Any]:
        """Withdraw a release: the egress copies are deleted, the reason kept (an output
        checker who is not the project's, or the lead)."""
        person.signed_in(f"revoke export request {request.name}")
        workspace = self.workspace(request.spec.project)
        checker = may_view_files(person, request, workspace, self.settings)
        if not (checker or is_lead(person, workspace)):
            raise RefusedError(
                f"{person.name} may not revoke export request {request.name}: output "
                "checkers who have never been the project's, and the project's lead while a "
                "member of its Ready workspace, do"
            )
        if request.status.phase not in (ExportPhase.RELEASED, ExportPhase.REVOKED):
            raise RefusedError(
                f"export request {request.name}: is {request.status.phase.value}; only a "
                "Released request is revoked"
            )
        record = revoke_release(
            self.s3,
            self.settings,
            ExportRef.of(request),
            reason=reason,
            revoked_by=person.name,
            now=self.clock(),
        )
        if request.status.phase is ExportPhase.RELEASED:
            self._record_once(
                request,
                ExportPhase.REVOKED,
                "revocation",
                {"by": record["revokedBy"], "at": record["revokedAt"], "reason": record["reason"]},
            )
        return record

    # --- writes -----------------------------------------------------------------------------------

    def record_access(self, request: ExportRequest, person: Person, action: str, path: str) -> None:
        """Append one access record to the export's status (the controller audits it). A JSON
        Patch `add` to the end of the list: no read, safe between replicas; the first record
        creates the list. The API server refuses a record past the cap: then nothing is
        served."""
        entry = {"by": person.name, "at": _stamp(self.clock()), "action": action, "path": path}
        where = EXPORT_REQUESTS.path(request.namespace, request.name) + "/status"
        what = f"record the {action} of {path} in export request {request.name}"
        try:
            self.kube.request(
                "PATCH",
                where,
                query=[("fieldManager", FIELD_MANAGER)],
                body=[{"op": "add", "path": "/status/access/-", "value": entry}],
                content_type="application/json-patch+json",
                what=what,
            )
        except RefusedError:
            status = (self.kube.get(EXPORT_REQUESTS, request.name, request.namespace) or {}).get(
                "status"
            ) or {}
            if status.get("access"):
                raise
            # No list yet: the first record creates it (refused as an edit if one appeared).
            self.kube.request(
                "PATCH",
                where,
                query=[("fieldManager", FIELD_MANAGER)],
                body={"status": {"access": [entry]}},
                content_type="application/merge-patch+json",
                what=what,
            )

    def _record_once(
        self, request: ExportRequest, phase: ExportPhase, field: str, record: dict[str, Any]
    ) -> None:
        """The phase with its record, written once: a rerun finds the record, writes nothing
        (the API server refuses a different one)."""
        self._write_status(
            request,
            lambda status: {} if status.get(field) else {"phase": phase.value, field: record},
        )

    def _write_status(
        self, request: ExportRequest, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        """Read, change, write the status with the object's resourceVersion as precondition;
        again when someone (the controller) wrote it meanwhile."""
        for attempt in range(STATUS_ATTEMPTS):
            obj = self.kube.get(EXPORT_REQUESTS, request.name, request.namespace)
            if obj is None:
                raise NotFoundError(f"export request {request.namespace}/{request.name} is gone")
            status = obj.get("status") or {}
            changed = change(status)
            if not changed:
                return  # already written (a rerun)
            body = {
                "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                "status": changed,
            }
            try:
                self.kube.request(
                    "PATCH",
                    EXPORT_REQUESTS.path(request.namespace, request.name) + "/status",
                    query=[("fieldManager", FIELD_MANAGER)],
                    body=body,
                    content_type="application/merge-patch+json",
                    what=f"update status of export request {request.name}",
                )
                return
            except ConflictError:
                if attempt == STATUS_ATTEMPTS - 1:
                    raise

    def _update_as(
        self, person: Person, request: ExportRequest, change: Callable[[dict[str, Any]], None]
    ) -> ExportRequest:
        # Read as the airlock (people may not be impersonated to read), write as the person.
        kube = self.as_person(person)
        for attempt in range(STATUS_ATTEMPTS):
            obj = self.kube.get(EXPORT_REQUESTS, request.name, request.namespace)
            if obj is None:
                raise NotFoundError(f"export request {request.namespace}/{request.name} is gone")
            change(obj)
            try:
                return ExportRequest.from_object(kube.replace(obj))
            except ConflictError:
                if attempt == STATUS_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _declared_path(request: ExportRequest, path: str) -> str:
        normal = normalise_export_path(path)
        if normal not in {normalise_export_path(f.path) for f in request.spec.files}:
            raise NotFoundError(f"file {normal!r} is not part of export request {request.name}")
        return normal


def parse_votes(request: ExportRequest, form: Mapping[str, str]) -> list[FileVote]:
    """Votes from a form or JSON body: `vote:<path>` and `comment:<path>` per file."""
    votes = []
    for f in request.spec.files:
        path = normalise_export_path(f.path)
        vote = form.get(f"vote:{path}", "")
        if not vote:
            raise InvalidInputError(f"vote:{path}: vote on every file (approve, changes, reject)")
        try:
            votes.append(
                FileVote.model_validate(
                    {"path": f.path, "vote": vote, "comment": form.get(f"comment:{path}", "")}
                )
            )
        except ValueError as exc:
            raise InvalidInputError(
                f"vote:{path}: {vote!r} is not a vote; use approve, changes or reject"
            ) from exc
    return votes
