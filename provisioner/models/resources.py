"""Pydantic models of our custom resources: Dataset, AccessRequest, Workspace.

These models are the single source of the CRD schemas (`provisioner.planning.crds` generates
the OpenAPI schemas from them). Field names are camelCase on the wire, as everywhere in
Kubernetes; Python code uses snake_case.

Who writes what:
- Dataset: data stewards write `spec` (only a dataset's own steward may change it; its source
  never changes and its classification only goes up); only the controller writes
  `status.manifest`, from its own listing of the data (`controller/datasets.py`).
- AccessRequest: the requester writes `spec` on create; approvers only append to
  `spec.decisions` (enforced by ValidatingAdmissionPolicies); the controller writes `status`.
- Workspace: only the controller writes it; JupyterHub reads it.
- ExportRequest: its author files `spec`, output checkers append to `spec.reviews`; the
  controller writes `status.phase`, `reviewers` and `conditions` from the reviews; the airlock
  (`settings.airlock_user`) alone writes `status.release`, `status.revocation` and
  `status.access` (admission policy `tre-exportrequest-approved`).
- BrowserActivity: the airlock alone creates it, from a batch of the browser gate's records
  (RBAC; the spec is immutable); the controller audits each record and then deletes it.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from provisioner import API_GROUP, API_VERSION
from provisioner.models import rules
from provisioner.models.types import (
    BucketName,
    ClassificationTier,
    ComputeTier,
    DatasetName,
    NfsPath,
    NfsServer,
    ProjectSlug,
    S3Prefix,
    S3Region,
    Username,
)

# The phases are plain enums of the rules module (the CLI's queries read them without
# pydantic), named here too, beside the statuses they belong to.
RequestPhase = rules.RequestPhase
WorkspacePhase = rules.WorkspacePhase


class KubeModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class CustomResource(KubeModel):
    """A top-level custom resource: `name` is metadata.name, then spec and status."""

    kind: ClassVar[str]
    name: str
    spec: Any
    status: Any
    # Set by the API server, read from live objects; never sent (see to_object). The uid keys
    # audit entries; the creation time orders a project's requests.
    uid: str = ""
    created_at: dt.datetime | None = None
    namespace: str = ""  # namespaced kinds only (ExportRequest)
    # Being deleted (metadata.deletionTimestamp), and what still holds it (metadata.finalizers):
    # the controller lifts its own finalizer once the object's records are in the audit log.
    deleted_at: dt.datetime | None = None
    finalizers: tuple[str, ...] = ()

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Self:
        """Parse a live object as the API server returns it."""
        meta = obj["metadata"]
        return cls.model_validate(
            {
                "name": meta["name"],
                "uid": meta.get("uid", ""),
                "created_at": meta.get("creationTimestamp"),
                "namespace": meta.get("namespace", ""),
                "deleted_at": meta.get("deletionTimestamp"),
                "finalizers": tuple(meta.get("finalizers") or ()),
                "spec": obj.get("spec", {}),
                "status": obj.get("status") or {},
            }
        )

    def to_object(self, *, with_status: bool = False) -> dict[str, Any]:
        """The object to send to the API server (status goes through its subresource)."""
        obj: dict[str, Any] = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": self.kind,
            "metadata": {
                "name": self.name,
                **({"namespace": self.namespace} if self.namespace else {}),
            },
            "spec": self.spec.to_wire(),
        }
        if with_status:
            obj["status"] = self.status.to_wire()
        return obj


class Condition(KubeModel):
    """A Kubernetes-style condition (metav1.Condition, without observedGeneration)."""

    type: str = Field(min_length=1, max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: dt.datetime | None = None


# --- Dataset -------------------------------------------------------------------------------


class S3Source(KubeModel):
    """Objects under `prefix` in `bucket`, mounted by the configured S3 CSI driver from the
    platform's S3 endpoint (`settings.s3_endpoint_url`, never a dataset's). `region` (default
    `settings.s3_region`) is the bucket's region. Each field reaches the node plugin, which
    runs as root, so each is a domain type with a closed alphabet (`provisioner.models.rules`)."""

    bucket: BucketName
    prefix: S3Prefix = ""
    region: S3Region | None = None


class NfsSource(KubeModel):
    """An NFS export, mounted read-only by the kubelet (as root): server and path are domain
    types with one spelling per place."""

    server: NfsServer
    path: NfsPath


class DatasetSource(KubeModel):
    """Where the data lives. Exactly one of `s3` and `nfs`."""

    s3: S3Source | None = None
    nfs: NfsSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.s3 is None) == (self.nfs is None):
            raise ValueError("source: set exactly one of 's3' and 'nfs'")
        return self


class DatasetSpec(KubeModel):
    title: str = Field(min_length=1, max_length=200)
    steward: Username
    classification: ClassificationTier
    source: DatasetSource
    description: str = Field(default="", max_length=4000)


class DatasetManifest(KubeModel):
    """What the data looked like when it was verified: approvals pin `sha256`."""

    object_count: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    computed_at: dt.datetime


class DatasetStatus(KubeModel):
    manifest: DatasetManifest | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=16)


class Dataset(CustomResource):
    kind: ClassVar[str] = "Dataset"
    name: DatasetName
    spec: DatasetSpec
    status: DatasetStatus = Field(default_factory=DatasetStatus)


# --- AccessRequest -------------------------------------------------------------------------


class DecisionAction(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    REVOKE = "revoke"
    EXTEND = "extend"


class Decision(KubeModel):
    """One entry of the append-only decision list. `by` must equal the caller (VAP-checked)."""

    action: DecisionAction
    by: Username
    at: dt.datetime
    comment: str = Field(default="", max_length=2000)
    # For `extend`: the new end date.
    end_date: dt.date | None = None
    # For `approve`: dataset name -> manifest sha256 that the approver saw. A workspace only
    # mounts data whose current manifest still matches (admission policy: it is the current
    # one when the approval is made).
    manifest_hashes: dict[str, str] = Field(default_factory=dict)
    # For `approve`: dataset name -> the tier it had when approved. The number of approvers a
    # request needs follows the highest tier recorded or current, so lowering a tier later
    # cannot lower the bar (admission policy: it is the current tier when recorded).
    classifications: dict[str, ClassificationTier] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _extend_has_date(self) -> Self:
        if (self.action is DecisionAction.EXTEND) != (self.end_date is not None):
            raise ValueError("decision.endDate: required for 'extend' and only for 'extend'")
        return self


class AccessRequestSpec(KubeModel):
    project: ProjectSlug
    requester: Username
    lead: Username
    members: list[Username] = Field(min_length=1, max_length=100)
    datasets: list[DatasetName] = Field(min_length=1, max_length=20)
    purpose: str = Field(min_length=10, max_length=4000)
    start_date: dt.date
    end_date: dt.date
    compute_tier: ComputeTier = ComputeTier.SMALL
    decisions: list[Decision] = Field(default_factory=list, max_length=64)

    @field_validator("members", "datasets")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        duplicates = sorted(v for v, n in Counter(values).items() if n > 1)
        if duplicates:
            raise ValueError(f"duplicate entries {duplicates}; list each one once")
        return values

    @model_validator(mode="after")
    def _dates_in_order(self) -> Self:
        if self.end_date <= self.start_date:
            raise ValueError(
                f"endDate: must be after startDate {self.start_date} (got {self.end_date})"
            )
        return self


class AccessRequestStatus(KubeModel):
    phase: RequestPhase = RequestPhase.PENDING
    approvers: list[Username] = Field(default_factory=list)
    effective_end_date: dt.date | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=16)


class AccessRequest(CustomResource):
    kind: ClassVar[str] = "AccessRequest"
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    spec: AccessRequestSpec
    status: AccessRequestStatus = Field(default_factory=AccessRequestStatus)


# --- Workspace -----------------------------------------------------------------------------


class WorkspaceDataset(KubeModel):
    """A dataset as the workspace mounts it: pinned to the manifest hash that was approved."""

    name: DatasetName
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    classification: ClassificationTier
    source: DatasetSource


class WorkspaceSpec(KubeModel):
    """The effective state of one project: the union of its active access requests."""

    project: ProjectSlug
    # The lead of the project's first approved request. Only the owner's later requests
    # (amendments) join the workspace; a slug stays with its owner until TornDown.
    owner: Username | None = None
    founding_request: str | None = Field(default=None, max_length=63)
    namespace: str = Field(max_length=63)
    members: list[Username] = Field(default_factory=list)
    datasets: list[WorkspaceDataset] = Field(default_factory=list)
    compute_tier: ComputeTier = ComputeTier.SMALL
    expires_at: dt.date | None = None
    requests: list[str] = Field(default_factory=list)
    # Everyone who has been a member, lead or owner of the project since its workspace was
    # made, current members included: only grows (kept while Frozen), so a former member
    # never reviews the project's exports (review 3, S8).
    people: list[Username] = Field(default_factory=list)
    # The most independent output checkers an export of the project needs: the most its
    # data ever asked (outputs in project storage may come from any of it); only grows.
    export_reviewers: int = Field(default=2, ge=2)


class NotebookRecord(KubeModel):
    """A notebook pod the controller has seen in the project namespace.

    Kept in the status until the pod is gone *and* its stop is in the audit log, so a stop is
    audited even when the pod vanished between two passes or the append failed once.
    """

    pod: str = Field(min_length=1, max_length=253)
    uid: str = Field(min_length=1, max_length=64)
    user: str = Field(max_length=256)


class BrowserUsage(KubeModel):
    """One person's bytes sent to the browser from a workspace on one day (UTC), by meter
    (the browser gate's `content` and `other`), and the meters whose budget they crossed."""

    user: Username
    day: dt.date
    content: int = Field(default=0, ge=0)
    other: int = Field(default=0, ge=0)
    crossed: list[Literal["content", "other"]] = Field(default_factory=list, max_length=2)


class WorkspaceStatus(KubeModel):
    phase: WorkspacePhase = WorkspacePhase.PROVISIONING
    frozen_at: dt.datetime | None = None
    torn_down_at: dt.datetime | None = None
    # The uid of the namespace the controller created for this workspace: a namespace of the
    # same name with another uid is not ours, and nothing is written into it.
    namespace_uid: str | None = Field(default=None, max_length=64)
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    # The notebook pods running (or stopped and not yet audited), sorted by pod name. Bounded
    # by the namespace's pod quota in practice; the cap keeps a status object small.
    notebooks: list[NotebookRecord] = Field(default_factory=list, max_length=256)
    # What each person's browsers received from this workspace today (UTC), as the browser
    # gates report it: the hub starts a person's next gate from it, so a restarted server
    # does not get a fresh budget. Only today's entries are kept.
    browser: list[BrowserUsage] = Field(default_factory=list, max_length=256)


class Workspace(CustomResource):
    kind: ClassVar[str] = "Workspace"
    name: ProjectSlug
    spec: WorkspaceSpec
    status: WorkspaceStatus = Field(default_factory=WorkspaceStatus)


# --- ExportRequest ------------------------------------------------------------------------------


class ExportFileKind(StrEnum):
    OUTPUT = "output"  # leaves the workspace if approved
    SUPPORTING = "supporting"  # shown to reviewers (code, logs), never released


# A file's path relative to the project storage root, as an export names it (the airlock
# normalises and confines it before reading: provisioner/airlock/paths.py).
ExportPath = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^/\x00][^\x00]*$")]


class ExportFile(KubeModel):
    """One file offered for export: where it is in project storage and what it is."""

    path: ExportPath
    size: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    kind: ExportFileKind = ExportFileKind.OUTPUT
    description: str = Field(min_length=1, max_length=2000)


class Vote(StrEnum):
    APPROVE = "approve"
    CHANGES = "changes"  # request changes: the author may submit a new request
    REJECT = "reject"


class FileVote(KubeModel):
    path: str = Field(min_length=1, max_length=1024)
    vote: Vote
    comment: str = Field(default="", max_length=2000)


class ExportReview(KubeModel):
    """One output checker's review of every file, appended to `spec.reviews` (policy-checked:
    by the caller, an output checker who is neither the author nor a project member)."""

    by: Username
    at: dt.datetime
    votes: list[FileVote] = Field(min_length=1, max_length=50)


class ExportPhase(StrEnum):
    SUBMITTED = "Submitted"
    RETURNED = "Returned"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    RELEASED = "Released"
    WITHDRAWN = "Withdrawn"
    REVOKED = "Revoked"


class ExportRequestSpec(KubeModel):
    project: ProjectSlug
    author: Username
    files: list[ExportFile] = Field(min_length=1, max_length=50)
    # What a reviewer needs to judge disclosure risk: the population, the method, the cells.
    context: str = Field(min_length=10, max_length=8000)
    reviews: list[ExportReview] = Field(default_factory=list, max_length=16)
    # Set once by the author; nothing is decided after it.
    withdrawn: bool = False

    @field_validator("files")
    @classmethod
    def _unique_paths(cls, files: list[ExportFile]) -> list[ExportFile]:
        duplicates = sorted(p for p, n in Counter(f.path for f in files).items() if n > 1)
        if duplicates:
            raise ValueError(f"duplicate paths {duplicates}; list each file once")
        return files


class ReleaseRecord(KubeModel):
    """What left: written once by the airlock when it marks the export Released, after the
    release manifest (release.json) exists in the egress bucket."""

    by: Username  # who released it (the airlock vouches; the audit log records it)
    at: dt.datetime
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # sha256 of release.json's bytes
    files: int = Field(ge=1)  # the output files released: every one of the export's


class RevocationRecord(KubeModel):
    """Why a released export was taken back: written once by the airlock, with Revoked."""

    by: Username
    at: dt.datetime
    reason: str = Field(min_length=10, max_length=2000)


class AccessAction(StrEnum):
    VIEW = "view"  # an output checker opened a quarantined file
    DOWNLOAD = "download"  # a released file was handed out (a download link issued)


class AccessRecord(KubeModel):
    """One look at one file of the export, appended by the airlock; never changed."""

    by: Username
    at: dt.datetime
    action: AccessAction
    path: ExportPath


# Access records an export holds. A view or download the airlock cannot record is one it
# must refuse (every access is audited), so a full list ends access to that export. Views
# have a budget of their own, and each person a share of it (the status admission policy
# counts them), so that neither one checker nor all of them together can use up the room
# kept for the lead's downloads: 100 views is one checker opening 50 files twice, 384 views
# leave 128 downloads.
MAX_ACCESS_RECORDS: Final = 512
MAX_VIEWS_PER_PERSON: Final = 100
MAX_VIEW_RECORDS: Final = 384


class ExportRequestStatus(KubeModel):
    phase: ExportPhase = ExportPhase.SUBMITTED
    reviewers: list[Username] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    # The airlock's, write-once (release, revocation) or append-only (access); the controller
    # carries them over untouched and audits each one (planning/project.py).
    release: ReleaseRecord | None = None
    revocation: RevocationRecord | None = None
    access: list[AccessRecord] = Field(default_factory=list, max_length=MAX_ACCESS_RECORDS)


class ExportRequest(CustomResource):
    """Namespaced, in the project's namespace: its members' requests to take files out."""

    kind: ClassVar[str] = "ExportRequest"
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    spec: ExportRequestSpec
    status: ExportRequestStatus = Field(default_factory=ExportRequestStatus)


# --- BrowserActivity ----------------------------------------------------------------------------


class BrowserRecord(KubeModel):
    """One record of a browser gate: a file served, an upload, a refusal, a budget crossed.
    `seq` numbers a pod's records from 1, so (pod uid, seq) names one record for good."""

    seq: int = Field(ge=1)
    event: str = Field(pattern=r"^[a-z]+\.[a-z]+$", max_length=40)
    at: dt.datetime
    # The record's other fields as the gate wrote them, each as text (path, bytes, sha256,
    # rule, meter, ...): the audit entry carries them unchanged.
    fields: dict[str, str] = Field(default_factory=dict, max_length=16)

    @field_validator("fields")
    @classmethod
    def _bounded(cls, fields: dict[str, str]) -> dict[str, str]:
        for key, value in fields.items():
            if not 1 <= len(key) <= 40 or len(value) > MAX_BROWSER_FIELD:
                raise ValueError(
                    f"field {key[:40]!r}: names are 1-40 characters, values at most "
                    f"{MAX_BROWSER_FIELD}"
                )
        return fields


# A value of a record (a path, a rule) is cut to this length by the airlock: paths longer
# than that are not worth a bigger object, and the record still names the file's sha256.
MAX_BROWSER_FIELD: Final = 1024
MAX_BROWSER_RECORDS: Final = 100


class BrowserActivitySpec(KubeModel):
    project: ProjectSlug
    user: Username
    pod: str = Field(min_length=1, max_length=253)
    pod_uid: str = Field(min_length=1, max_length=64)
    # The gate's counts for the day when it sent the batch (cumulative for the day).
    usage: BrowserUsage
    records: list[BrowserRecord] = Field(default_factory=list, max_length=MAX_BROWSER_RECORDS)


class BrowserActivityStatus(KubeModel):
    pass


class BrowserActivity(CustomResource):
    """Namespaced, in the project's namespace: one batch of a browser gate's records, as the
    airlock received it from the gate (authenticated by the pod's own token). Immutable."""

    kind: ClassVar[str] = "BrowserActivity"
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=253)
    spec: BrowserActivitySpec
    status: BrowserActivityStatus = Field(default_factory=BrowserActivityStatus)
