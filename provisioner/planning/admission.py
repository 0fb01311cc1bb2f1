"""ValidatingAdmissionPolicies: who may write what, enforced by the API server itself.

The CRDs (`provisioner.planning.crds`) check the *shape* of an object. These policies check the
*caller* (`request.userInfo`), which no schema can see, so the four-eyes rule holds for every
client: `tre`, `kubectl`, or a script with a stolen token. Each policy has a binding of the
same name with `validationActions: [Deny]` and `failurePolicy: Fail` (a policy that cannot be
evaluated refuses rather than waves through). Messages name the field and the fix.

AccessRequest (`tre-accessrequest-*`):
- create: `spec.requester` is the caller; no decisions yet; `endDate - startDate` is at most
  `settings.max_request_days`.
- update (the main resource; the controller writes `status` through its subresource): nothing
  in `spec` changes except `spec.decisions`, which only grows, by one entry per update, and
  never rewrites an earlier entry. The new entry's `by` is the caller, who is in
  `settings.approver_group` and is neither the requester nor the lead of the request. Nobody
  approves twice; nothing is approved or extended after a reject or revoke; nothing is revoked
  twice; an extension stays within `settings.max_request_days` of `startDate`.
- the project's owner files amendments, and an approver approves one, only while the owner is a
  current member of the workspace (`project-owner`, `amendment-owner-acts`; review 3, S9).
- status set to phase Approved: at least one approval by someone other than the requester and
  the lead, and no reject or revoke. If the request names a dataset at or above
  `settings.two_approver_tier`, two *distinct* such approvers. That last rule needs the
  Datasets' classifications: the policy takes the Dataset kind as its parameter and the binding
  selects every Dataset, so the API server evaluates the rule once per Dataset and reads
  `spec.classification` itself. A label selector on a classification label would evaluate
  fewer Datasets, but a missing or wrong label would then silently skip the check. (A
  request naming a Dataset that does not exist is not checked here; the controller keeps such
  requests Pending.)

Dataset (`tre-dataset-*`):
- `classification-label`: the optional `tre.ucloud.org/classification` label, used to list
  datasets by tier with `kubectl get -l`, must equal `spec.classification`;
- `steward-only`: only the dataset's own steward (`oldObject.spec.steward`) updates it; a
  handover to another steward is an update by the old one. Creating needs the stewards group
  (RBAC). The CRD adds that `spec.source` never changes and `spec.classification` only goes
  up, and `status` is the controller's (RBAC: stewards have no `datasets/status`).
- `no-overlap`: on create, and on an update that changes the classification, a dataset whose
  source overlaps another's (same bucket and one prefix contains the other, '' being the
  whole bucket; same NFS server and one path contains the other at '/' boundaries) is refused
  unless the containing dataset's tier is at least the contained one's: otherwise the data
  registered at a high tier would be readable through a dataset at a lower one. Like
  four-eyes it takes every Dataset as a parameter and is evaluated once per Dataset. It reads
  Datasets from the API server's cache: two overlapping registrations within the same moment
  can both pass (known gap, docs/architecture.md). It compares text, which is sound because
  the CRD gives each location one spelling (`provisioner.models.rules`).
- `not-platform-bucket`: no dataset reads one of the platform's own buckets
  (`settings.platform_buckets`: audit log, airlock quarantine and egress).

Metadata of Datasets, AccessRequests and ExportRequests (`tre-resource-metadata`): nobody
gives one an owner reference, and nobody but the controller adds a finalizer (its own,
`tre.ucloud.org/audited`, on requests and exports) or lifts that one. Those who may update
these objects (stewards, approvers, checkers, members through the airlock) could otherwise
name an owner that does not exist and have the garbage collector delete the object (access
removed with no decision and no audit entry; a dataset registered again starts a new
history), or hold a deletion, or a project namespace's teardown, with a finalizer of their
own. The controller's finalizer keeps every request and export until its records are in the
audit log. Nothing of the platform trusts a label or annotation on these kinds.

Pods in workspaces (`tre-pod-requires-deny-all`, security invariant 1): no pod is created in a
project namespace (labelled `tre.ucloud.org/project`) unless that namespace's
`default-deny-all` NetworkPolicy exists and still denies all ingress and egress for every
pod. The policy takes NetworkPolicy as its parameter, looked up by name in the namespace of
the pod (`paramRef` without a namespace), and a missing parameter means Deny; so deleting the
policy by hand stops new pods within moments (the server's parameter cache), not at the next
resync.

Workspace (`tre-workspace-controller-only`): only the controller identity creates, updates or
deletes Workspaces (JupyterHub trusts them). An administrator who must intervene by hand
deletes that binding first, which the API server's audit log records.

ExportRequest (`tre-exportrequest-*`, in project namespaces, the workspace access ConfigMap as
parameter): filed by a member of a Ready workspace in their own name; reviews appended one at
a time by independent output checkers (never anyone who has been the project's: the
ConfigMap's `people`), while the workspace is Ready; the status has two writers, each with
fields of its own: the controller (phase, reviewers, conditions, from the reviews) and the airlock
(`settings.airlock_user`: release, revocation and access records, with the phases Released
and Revoked), each unable to touch the other's. The airlock acts for people by impersonation,
so the create and review rules judge the person, not the service.

CEL notes (checked against kube-apiserver 1.36):
- At run time admission policies see custom-resource dates as strings, but the type checker
  reads the CRD's `format: date` as a timestamp; `string(d).substring(0, 10)` is right for
  both, and `timestamp(text + 'T00:00:00Z')` turns it into a timestamp.
- `list.slice(a, b)` exists but errors on a bound past the end, so a size check guards it;
  `sort`, `distinct`, `join` exist too. `cel.bind` does not: `variables` are used instead.
- `map.filter` iterates in no stable order: lists built from it are sorted before printing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from provisioner import API_GROUP, API_VERSION
from provisioner.models import rules
from provisioner.models.resources import (
    MAX_VIEW_RECORDS,
    MAX_VIEWS_PER_PERSON,
    DecisionAction,
    ExportPhase,
    RequestPhase,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier, DatasetCsiDriver
from provisioner.planning import names, notebook_pods, storage
from provisioner.planning.datasets import platform_bucket_reason
from provisioner.planning.names import LABEL_PROJECT, POLICY_DEFAULT_DENY
from provisioner.planning.network_policies import NAMESPACE_NAME_LABEL, platform_peers

ADMISSION_API_VERSION: Final = "admissionregistration.k8s.io/v1"
PART_OF_LABEL: Final = {"app.kubernetes.io/part-of": "ucloud-tre"}
CLASSIFICATION_LABEL: Final = f"{API_GROUP}/classification"

CREATE_REQUEST_POLICY: Final = "tre-accessrequest-create"
DECISIONS_POLICY: Final = "tre-accessrequest-decisions"
APPROVED_PHASE_POLICY: Final = "tre-accessrequest-approved"
FOUR_EYES_POLICY: Final = "tre-accessrequest-four-eyes"
DATASET_LABEL_POLICY: Final = "tre-dataset-classification-label"
DATASET_STEWARD_POLICY: Final = "tre-dataset-steward-only"
DATASET_OVERLAP_POLICY: Final = "tre-dataset-no-overlap"
DATASET_PLATFORM_BUCKET_POLICY: Final = "tre-dataset-not-platform-bucket"
METADATA_POLICY: Final = "tre-resource-metadata"
WORKSPACE_POLICY: Final = "tre-workspace-controller-only"
PROJECT_OWNER_POLICY: Final = "tre-accessrequest-project-owner"
NOT_PROJECT_MEMBER_POLICY: Final = "tre-accessrequest-approver-not-member"
AMENDMENT_OWNER_POLICY: Final = "tre-accessrequest-amendment-owner-acts"
DECISION_PINS_POLICY: Final = "tre-accessrequest-approval-pins"
PROJECT_FOUR_EYES_POLICY: Final = "tre-accessrequest-four-eyes-project"
PROJECT_NAMESPACE_POLICY: Final = "tre-project-namespaces"
PROJECT_OBJECTS_POLICY: Final = "tre-project-objects-controller-only"
CONTROLLER_SCOPE_POLICY: Final = "tre-controller-scope"
POD_ACCESS_POLICY: Final = "tre-pod-workspace-access"
POD_NO_EXEC_POLICY: Final = "tre-pod-no-exec"
INLINE_NFS_POLICY: Final = "tre-no-inline-nfs"
EXPORT_CREATE_POLICY: Final = "tre-exportrequest-create"
EXPORT_UPDATE_POLICY: Final = "tre-exportrequest-reviews"
EXPORT_STATUS_POLICY: Final = "tre-exportrequest-approved"
POD_DENY_ALL_POLICY: Final = "tre-pod-requires-deny-all"
PLATFORM_PEERS_POLICY: Final = "tre-platform-peer-pods"
BROWSER_ACTIVITY_POLICY: Final = "tre-browseractivity-airlock-only"
READ_GRANTS_POLICY: Final = "tre-controller-read-grants"
READ_GRANT_BINDINGS_POLICY: Final = "tre-controller-read-grant-bindings"
# Not `tre-accessrequest-*`: it takes a ConfigMap (a built-in kind) as parameter, so its
# binding is never deleted (guards_custom_resources).
OPEN_REQUESTS_POLICY: Final = "tre-open-requests-limit"
# Room kept in spec.decisions (CRD maxItems) for a revoke: revocation can never be blocked by
# a list filled with other decisions.
MAX_DECISIONS: Final = 64
MAX_DECISIONS_BEFORE_REVOKE: Final = MAX_DECISIONS - 4
# The cluster's own control plane in project namespaces: kube-controller-manager's controllers,
# each with its own ServiceAccount (`--use-service-account-credentials`, as every current
# distribution runs it), exempted by exact name and only for the writes it makes there. Any
# other kube-system ServiceAccount (a CNI, CSI driver, autoscaler or GitOps agent) is judged
# like everyone else. `system:kube-controller-manager` is the whole controller manager's own
# credential (without that flag it acts as one user); whoever holds it owns the cluster anyway.
_KUBE_SYSTEM_SA: Final = "system:serviceaccount:kube-system:"


@dataclass(frozen=True)
class ClusterControllerWrite:
    """One write a kube-controller-manager controller makes in project namespaces: its
    ServiceAccount's name in kube-system, the operations, and (when not any) the resource
    and the object's name."""

    controller: str
    operations: tuple[str, ...]
    resource: str = ""
    name: str = ""


CLUSTER_CONTROLLER_WRITES: Final[tuple[ClusterControllerWrite, ...]] = (
    # empties a terminating namespace
    ClusterControllerWrite("namespace-controller", ("DELETE",)),
    # deletes dependents whose owners are gone
    ClusterControllerWrite("generic-garbage-collector", ("DELETE",)),
    ClusterControllerWrite("service-account-controller", ("CREATE",), "serviceaccounts", "default"),
    ClusterControllerWrite(
        "root-ca-cert-publisher", ("CREATE", "UPDATE"), "configmaps", "kube-root-ca.crt"
    ),
    # binds claims to volumes (annotations on the claim)
    ClusterControllerWrite("persistent-volume-binder", ("UPDATE",), "persistentvolumeclaims"),
    # lifts a deleted claim's protection finalizer once no pod uses it
    ClusterControllerWrite("pvc-protection-controller", ("UPDATE",), "persistentvolumeclaims"),
)


def cluster_controller_exemption(*, objects_in_namespace: bool = True) -> str:
    """CEL: the caller is one of the cluster's own controllers making a write it needs
    (`CLUSTER_CONTROLLER_WRITES`). With `objects_in_namespace` false (namespaces themselves)
    only the controller manager's own credential: none of its controllers writes a project
    namespace object (the namespace controller finalizes through a subresource)."""
    user = "request.userInfo.username"
    terms = [f"{user} == 'system:kube-controller-manager'"]
    for write in CLUSTER_CONTROLLER_WRITES if objects_in_namespace else ():
        term = f"{user} == {cel_str(_KUBE_SYSTEM_SA + write.controller)} && "
        term += f"request.operation in {_cel_list(write.operations)}"
        if write.resource:
            term += f" && request.resource.resource == {cel_str(write.resource)}"
        if write.name:
            term += f" && object.metadata.name == {cel_str(write.name)}"
        terms.append(f"({term})")
    return "(" + " || ".join(terms) + ")"


# The planner's deny-all NetworkPolicy (planning.names.POLICY_DEFAULT_DENY).
DENY_ALL_POLICY_NAME: Final = POLICY_DEFAULT_DENY

_APPROVE = DecisionAction.APPROVE.value
_EXTEND = DecisionAction.EXTEND.value
_FINAL_ACTIONS = (DecisionAction.REJECT.value, DecisionAction.REVOKE.value)


def plan_admission_policies(
    settings: Settings, *, controller_user: str | None = None
) -> list[dict[str, Any]]:
    """Every policy followed by its binding, in apply order.

    `controller_user` (default `settings.controller_user`) is the only identity that may
    write Workspaces.
    """
    controller = controller_user or settings.controller_user
    policies = [
        _create_request_policy(settings),
        _project_owner_policy(),
        _decisions_policy(settings),
        _not_project_member_policy(),
        _amendment_owner_policy(),
        _approval_pins_policy(),
        _approved_phase_policy(settings),
        _four_eyes_policy(settings),
        _project_four_eyes_policy(settings),
        _dataset_label_policy(),
        _dataset_steward_policy(),
        _dataset_overlap_policy(),
        _dataset_platform_bucket_policy(settings),
        _resource_metadata_policy(controller),
        _workspace_policy(controller),
        _project_namespace_policy(settings, controller),
        _controller_scope_policy(settings, controller),
        *_read_grants_policies(controller),
        _platform_peers_policy(settings),
        _browser_activity_policy(settings),
    ]
    planned: list[dict[str, Any]] = []
    for policy in policies:
        planned += [policy, policy_binding(policy)]
    objects = _project_objects_policy(controller)
    planned += [objects, policy_binding(objects, in_project_namespaces=True)]
    no_exec = _pod_no_exec_policy()
    planned += [no_exec, policy_binding(no_exec, in_project_namespaces=True)]
    if settings.forbid_inline_nfs:
        nfs = _inline_nfs_policy()
        planned += [nfs, policy_binding(nfs)]
    open_requests = _open_requests_policy(settings)
    planned += [
        open_requests,
        policy_binding(
            open_requests,
            param_name=names.OPEN_REQUESTS_CONFIGMAP,
            param_namespace=names.SYSTEM_NAMESPACE,
        ),
    ]
    access = _pod_access_policy(settings)
    planned += [
        access,
        policy_binding(access, param_name=names.WORKSPACE_ACCESS_NAME, in_project_namespaces=True),
    ]
    for export_policy in (
        _export_create_policy(),
        _export_update_policy(settings, controller),
        _export_status_policy(controller, settings.airlock_user),
    ):
        planned += [
            export_policy,
            policy_binding(
                export_policy, param_name=names.WORKSPACE_ACCESS_NAME, in_project_namespaces=True
            ),
        ]
    deny_all = _pod_requires_deny_all_policy()
    return [
        *planned,
        deny_all,
        policy_binding(deny_all, param_name=DENY_ALL_POLICY_NAME, in_project_namespaces=True),
    ]


def guards_custom_resources(policy: str) -> bool:
    """Whether `policy` judges only our custom resources. The others (namespaces, project
    objects, pods) take built-in kinds as parameters or guard built-in kinds: their bindings
    must never be deleted, not even in tests (upstream kubernetes#130887 breaks a built-in
    parameter kind's informer until the API server restarts)."""
    return policy.startswith(
        (
            "tre-accessrequest",
            "tre-dataset",
            "tre-workspace",
            "tre-browseractivity",
            METADATA_POLICY,
        )
    )


def high_tiers(settings: Settings) -> list[ClassificationTier]:
    """The tiers whose datasets need two distinct approvers."""
    return [t for t in ClassificationTier if t.rank >= settings.two_approver_tier.rank]


# --- AccessRequest -----------------------------------------------------------------------------


def _date(field: str) -> str:
    """CEL: a `YYYY-MM-DD` field as its text.

    At run time the API server hands admission policies custom-resource dates as strings, but
    its type checker reads the CRD's `format: date` as a timestamp; `string(x)` is valid for
    both, and the first ten characters are the date either way.
    """
    return f"string({field}).substring(0, 10)"


def _days_between(start: str, end: str) -> str:
    """CEL: whole days from one `YYYY-MM-DD` text to another."""
    return f"(timestamp({end} + 'T00:00:00Z') - timestamp({start} + 'T00:00:00Z')).getHours() / 24"


def _create_request_policy(settings: Settings) -> dict[str, Any]:
    max_days = settings.max_request_days
    return _policy(
        CREATE_REQUEST_POLICY,
        _rules("accessrequests", ["CREATE"]),
        variables={
            "startDate": _date("object.spec.startDate"),
            "endDate": _date("object.spec.endDate"),
            "days": _days_between("variables.startDate", "variables.endDate"),
        },
        validations=[
            _validation(
                "object.spec.requester == request.userInfo.username",
                "'spec.requester: must be the caller ' + request.userInfo.username + "
                "' (got ' + object.spec.requester + '); "
                "file the request under your own name'",
            ),
            _validation(
                f"!(object.spec.project in {_cel_list(names.reserved_project_slugs(settings))})",
                "'spec.project: ' + object.spec.project + ' would use the platform namespace "
                f"{names.NAMESPACE_PREFIX}' + object.spec.project + '; choose another project "
                "slug'",
                reason="Invalid",
            ),
            _validation(
                "!has(object.spec.decisions) || size(object.spec.decisions) == 0",
                message="spec.decisions: must be empty when a request is filed; approvers "
                "append their decisions afterwards",
                reason="Invalid",
            ),
            _validation(
                f"variables.days <= {max_days}",
                f"'spec.endDate: must be within {max_days} days of spec.startDate ' + "
                "variables.startDate + ' (got ' + variables.endDate + ', ' + "
                "string(variables.days) + ' days); ask for an extension instead'",
                reason="Invalid",
            ),
        ],
    )


def _open_requests_policy(settings: Settings) -> dict[str, Any]:
    """At most `settings.max_open_requests` requests awaiting a decision per person.

    The parameter is the controller's list of open requests (ConfigMap
    `tre-system/tre-open-requests`: request name -> requester), kept current on every pass
    and on every request's watch event; a missing list refuses every filing (Deny). The count
    is as fresh as the controller's last write: requests filed faster than it reacts are
    counted from its next write on (docs/architecture.md, Known gaps)."""
    limit = settings.max_open_requests
    return _policy(
        OPEN_REQUESTS_POLICY,
        _rules("accessrequests", ["CREATE"]),
        param_kind={"apiVersion": "v1", "kind": "ConfigMap"},
        variables={
            "open": "has(params.data) ? params.data.filter(k, params.data[k] == "
            "request.userInfo.username) : []",
        },
        validations=[
            _validation(
                f"size(variables.open) < {limit}",
                "request.userInfo.username + ' has ' + string(size(variables.open)) + ' access "
                "requests awaiting a decision (' + variables.open.sort().join(', ') + '), and "
                f"one person may have at most {limit} open at once (TRE_MAX_OPEN_REQUESTS); "
                "file this one once a decision is made, or ask an approver to reject a request "
                "you no longer need'",
            ),
        ],
    )


def open_requests_configmap() -> dict[str, Any]:
    """The open requests, empty: installed with the platform so that filing works before the
    controller's first pass (the limit's binding refuses every filing without it)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.OPEN_REQUESTS_CONFIGMAP,
            "namespace": names.SYSTEM_NAMESPACE,
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY},
        },
    }


def _decisions_policy(settings: Settings) -> dict[str, Any]:
    group = settings.approver_group
    max_days = settings.max_request_days
    entry = "variables.entry"
    index = "string(size(variables.decisions) - 1)"
    appended = "!variables.appended || "
    extend = f"{appended}{entry}.action != '{_EXTEND}' || "
    return _policy(
        DECISIONS_POLICY,
        _rules("accessrequests", ["UPDATE"]),
        variables={
            "oldDecisions": "has(oldObject.spec.decisions) ? oldObject.spec.decisions : []",
            "decisions": "has(object.spec.decisions) ? object.spec.decisions : []",
            # Spec fields (other than decisions) that were changed, added or removed.
            "changedFields": "oldObject.spec.filter(k, k != 'decisions' && "
            "(!(k in object.spec) || object.spec[k] != oldObject.spec[k])) + "
            "object.spec.filter(k, k != 'decisions' && !(k in oldObject.spec))",
            "appended": "size(variables.decisions) > size(variables.oldDecisions)",
            "entry": "variables.decisions[size(variables.decisions) - 1]",
            "finalDecisions": "variables.oldDecisions.filter(d, d.action in "
            f"{_cel_list(_FINAL_ACTIONS)})",
            # Only read when the new entry is an extension (which has an endDate).
            "startDate": _date("object.spec.startDate"),
            "endDate": _date("object.spec.endDate"),
            "extendedTo": _date(f"{entry}.endDate"),
            # The end date in force: spec.endDate, or the later one the controller computed
            # from extensions that have enough approvers.
            "recordedEnd": "has(oldObject.status) && has(oldObject.status.effectiveEndDate) ? "
            + _date("oldObject.status.effectiveEndDate")
            + " : ''",
            "currentEnd": "variables.recordedEnd > variables.endDate ? variables.recordedEnd : "
            "variables.endDate",
            "extendedDays": _days_between("variables.startDate", "variables.extendedTo"),
        },
        validations=[
            _validation(
                "size(variables.changedFields) == 0",
                # Map order is not stable in CEL: sort for a repeatable message.
                "'spec.' + variables.changedFields.sort().join(', spec.') + ': cannot change "
                "once the request is filed (only spec.decisions grows); file a new access "
                "request instead'",
            ),
            _validation(
                # slice() fails on a bound beyond the list: check the size first.
                "size(variables.decisions) >= size(variables.oldDecisions) && "
                "variables.decisions.slice(0, size(variables.oldDecisions)) == "
                "variables.oldDecisions",
                message="spec.decisions: earlier decisions cannot be changed or removed; "
                "append a new decision instead",
            ),
            _validation(
                "size(variables.decisions) <= size(variables.oldDecisions) + 1",
                "'spec.decisions: append one decision per update (got ' + "
                "string(size(variables.decisions) - size(variables.oldDecisions)) + ' new)'",
                reason="Invalid",
            ),
            _validation(
                f"{appended}{entry}.by == request.userInfo.username",
                f"'spec.decisions[' + {index} + '].by: must be the caller ' + "
                f"request.userInfo.username + ' (got ' + {entry}.by + '); record "
                "decisions under your own name'",
            ),
            _validation(
                f"{appended}{cel_str(group)} in request.userInfo.groups",
                "'spec.decisions: ' + request.userInfo.username + ' is not in group "
                f"{group}, so may not decide on access requests; ask a member of the "
                "data-access committee'",
            ),
            _validation(
                # Granting decisions only: anyone in the group may reject or revoke.
                f"{appended}!({entry}.action in ['{_APPROVE}', '{_EXTEND}']) || "
                "!(request.userInfo.username == object.spec.requester || "
                "request.userInfo.username == object.spec.lead || "
                "request.userInfo.username in object.spec.members)",
                "'spec.decisions: ' + request.userInfo.username + ' is the ' + "
                "(request.userInfo.username == object.spec.requester ? 'requester' : "
                "request.userInfo.username == object.spec.lead ? 'lead' : 'a member') + "
                "' of this request and may not ' + variables.entry.action + ' it: nobody "
                "approves their own access (four eyes); another approver must decide'",
            ),
            _validation(
                # A second approval by the same person counts only for content they had not
                # seen: it must pin different manifests (re-approval after a data change).
                f"{appended}{entry}.action != '{_APPROVE}' || "
                f"!variables.oldDecisions.exists(d, d.action == '{_APPROVE}' && "
                f"d.by == {entry}.by && {_pins('d')} == {_pins(entry)})",
                "'spec.decisions: ' + variables.entry.by + ' has already approved this "
                "request as it is; a further approval must come from another approver'",
            ),
            _validation(
                f"{appended}{entry}.action == 'revoke' || "
                f"size(variables.decisions) <= {MAX_DECISIONS_BEFORE_REVOKE}",
                f"'spec.decisions: at most {MAX_DECISIONS_BEFORE_REVOKE} decisions other than "
                "a revoke (the rest of the list is kept free so that a revoke always fits); "
                "file a new access request'",
                reason="Invalid",
            ),
            _validation(
                f"{appended}!({entry}.action in ['{_APPROVE}', '{_EXTEND}']) || "
                "size(variables.finalDecisions) == 0",
                "'spec.decisions: this request was ' + variables.finalDecisions[0].action + "
                "'d by ' + variables.finalDecisions[0].by + ' and cannot be ' + "
                f"({entry}.action == '{_APPROVE}' ? 'approved' : 'extended') + '; "
                "file a new access request instead'",
            ),
            _validation(
                f"{appended}{entry}.action != 'revoke' || "
                "!variables.oldDecisions.exists(d, d.action == 'revoke')",
                message="spec.decisions: this request is already revoked; nothing to do",
            ),
            _validation(
                # `YYYY-MM-DD` texts order like the dates they name.
                f"{extend}variables.extendedTo > variables.currentEnd",
                f"'spec.decisions[' + {index} + '].endDate: an extension must end after the "
                "current end date ' + variables.currentEnd + ' (got ' + variables.extendedTo + "
                "')'",
                reason="Invalid",
            ),
            _validation(
                f"{extend}variables.extendedDays <= {max_days}",
                f"'spec.decisions[' + {index} + '].endDate: must be within {max_days} days of "
                "spec.startDate ' + variables.startDate + ' (got ' + variables.extendedTo + "
                "', ' + string(variables.extendedDays) + ' days); file a new access request "
                "for the rest of the project'",
                reason="Invalid",
            ),
        ],
    )


# Approvals that count: not by the requester, the lead or a member (the decisions policy
# refuses those anyway; this holds even for decisions written before that policy existed).
_COUNTED_APPROVERS: Final = (
    f"variables.decisions.filter(d, d.action == '{_APPROVE}' && "
    "d.by != object.spec.requester && d.by != object.spec.lead && "
    "!(d.by in object.spec.members)).map(d, d.by)"
)
_DECISIONS: Final = "has(object.spec.decisions) ? object.spec.decisions : []"
_OLD_DECISIONS: Final = "has(oldObject.spec.decisions) ? oldObject.spec.decisions : []"
# The entry an update appends (policies that take parameters only judge appends).
_APPENDS: Final = [
    {
        "name": "appends-a-decision",
        "expression": f"size({_DECISIONS}) > size({_OLD_DECISIONS})",
    }
]
_NEW_ENTRY: Final = f"({_DECISIONS})[size({_DECISIONS}) - 1]"
_SETS_APPROVED: Final = [
    {
        "name": "sets-phase-approved",
        "expression": "has(object.status) && has(object.status.phase) && "
        f"object.status.phase == '{RequestPhase.APPROVED.value}'",
    }
]


def _approved_phase_policy(settings: Settings) -> dict[str, Any]:
    tiers = [t.value for t in high_tiers(settings)]
    return _policy(
        APPROVED_PHASE_POLICY,
        _rules("accessrequests/status", ["UPDATE"]),
        match_conditions=_SETS_APPROVED,
        variables={
            "decisions": _DECISIONS,
            "approvers": _COUNTED_APPROVERS,
            # A tier recorded at approval time counts even if the dataset's tier is lower now.
            "recordedHigh": "variables.decisions.exists(d, has(d.classifications) && "
            f"d.classifications.exists(k, d.classifications[k] in {_cel_list(tiers)}))",
        },
        validations=[
            _validation(
                "size(variables.approvers) >= 1",
                message="status.phase: Approved needs an approve decision in spec.decisions "
                "by someone other than the requester, the lead and the members",
            ),
            _validation(
                f"!variables.decisions.exists(d, d.action in {_cel_list(_FINAL_ACTIONS)})",
                message="status.phase: a rejected or revoked request cannot be Approved",
            ),
            _validation(
                "!variables.recordedHigh || size(variables.approvers.distinct()) >= 2",
                "'status.phase: Approved needs approvals by two different people, because an "
                "approval recorded a dataset at a two-approver tier; approved so far by: ' + "
                "variables.approvers.distinct().join(', ')",
            ),
        ],
    )


def _four_eyes_policy(settings: Settings) -> dict[str, Any]:
    tiers = [t.value for t in high_tiers(settings)]
    threshold = settings.two_approver_tier.value
    return _policy(
        FOUR_EYES_POLICY,
        _rules("accessrequests/status", ["UPDATE"]),
        match_conditions=_SETS_APPROVED,
        param_kind={"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "Dataset"},
        variables={
            "decisions": _DECISIONS,
            "approvers": f"({_COUNTED_APPROVERS}).distinct()",
            "needsTwo": "params.metadata.name in object.spec.datasets && "
            f"params.spec.classification in {_cel_list(tiers)}",
        },
        validations=[
            _validation(
                "!variables.needsTwo || size(variables.approvers) >= 2",
                "'status.phase: Approved needs approvals by two different people, because "
                "dataset ' + params.metadata.name + ' is ' + params.spec.classification + "
                f"' (tier {threshold} or above); approved so far by: ' + "
                "(size(variables.approvers) == 0 ? 'nobody' : variables.approvers.join(', ')) "
                "+ '; a second approver must approve first'",
            ),
        ],
    )


def _project_owner_policy() -> dict[str, Any]:
    """A request for a project that has an owner must be filed by that owner (an amendment),
    while the owner is a current member of the workspace (review 3, S9: an owner whose own
    access was revoked or ended files nothing; the project continues when an approver
    extends the owner's request).

    Evaluated once per Workspace (parameter); a project without a Workspace, or whose
    Workspace was torn down, is free. The controller applies the same rule to requests filed
    before the project had an owner: they stay Pending (NotProjectOwner)."""
    return _policy(
        PROJECT_OWNER_POLICY,
        _rules("accessrequests", ["CREATE"]),
        param_kind={"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "Workspace"},
        validations=[
            _validation(
                "params.metadata.name != object.spec.project || !has(params.spec.owner) || "
                "params.spec.owner == request.userInfo.username || (has(params.status) && "
                "has(params.status.phase) && params.status.phase == 'TornDown')",
                "'spec.project: project ' + object.spec.project + ' belongs to ' + "
                "params.spec.owner + ', and only its owner may file further requests for it; "
                "ask ' + params.spec.owner + ' to file an amendment, or choose another project "
                "slug'",
            ),
            _validation(
                "params.metadata.name != object.spec.project || !has(params.spec.owner) || "
                f"params.spec.owner != request.userInfo.username || {_OWNER_ACTS} || "
                "(has(params.status) && has(params.status.phase) && "
                "params.status.phase == 'TornDown')",
                f"'spec.project: ' + request.userInfo.username + ' owns project ' + "
                f"object.spec.project + ' but {_OWNER_IDLE}; an approver extends your own "
                "request first'",
            ),
        ],
    )


# CEL, with a Workspace as `params`: its owner holds the lead's powers now (a current member
# of the workspace, which is not Frozen; `approvals.acting_lead`), and what to say when not.
_OWNER_ACTS: Final = (
    "(has(params.spec.members) && params.spec.owner in params.spec.members && "
    "!(has(params.status) && has(params.status.phase) && "
    "params.status.phase in ['Frozen', 'TornDown']))"
)
_OWNER_IDLE: Final = (
    "is not a current member of its workspace (their own access was revoked or has ended), "
    "so holds none of the powers of its lead"
)


def _appended_decision_policy(name: str, expression: str, message: str) -> dict[str, Any]:
    """A policy on the decision an update appends to an AccessRequest, with every Workspace
    as parameter (`variables.entry` is the new decision, `params` one Workspace)."""
    return _policy(
        name,
        _rules("accessrequests", ["UPDATE"]),
        param_kind={"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "Workspace"},
        match_conditions=_APPENDS,
        variables={"entry": _NEW_ENTRY},
        validations=[_validation(expression, message)],
    )


def _not_project_member_policy() -> dict[str, Any]:
    """Nobody approves or extends access to a project they are already a member of."""
    return _appended_decision_policy(
        NOT_PROJECT_MEMBER_POLICY,
        f"!(variables.entry.action in ['{_APPROVE}', '{_EXTEND}']) || "
        "params.metadata.name != object.spec.project || !has(params.spec.members) || "
        "!(request.userInfo.username in params.spec.members)",
        "'spec.decisions: ' + request.userInfo.username + ' is a member of project ' + "
        "object.spec.project + ' and may not ' + variables.entry.action + ' access "
        "to it (nobody approves access to their own project); another approver must "
        "decide'",
    )


def _amendment_owner_policy() -> dict[str, Any]:
    """An amendment (a request of the owner other than the founding one) is approved only
    while its owner holds the lead's powers (review 3, S9): one filed before the owner's own
    access was revoked or ended waits, and is not approved on a lead's word that no longer
    holds. Extensions are not judged here: they are how approvers let a project go on."""
    return _appended_decision_policy(
        AMENDMENT_OWNER_POLICY,
        f"variables.entry.action != '{_APPROVE}' || "
        "params.metadata.name != object.spec.project || !has(params.spec.owner) || "
        "object.spec.requester != params.spec.owner || "
        "(has(params.spec.foundingRequest) && "
        "object.metadata.name == params.spec.foundingRequest) || "
        f"{_OWNER_ACTS} || (has(params.status) && has(params.status.phase) && "
        "params.status.phase == 'TornDown')",
        "'spec.decisions: ' + object.metadata.name + ' amends project ' + "
        f"object.spec.project + ', whose owner ' + params.spec.owner + ' {_OWNER_IDLE}; "
        "approve it once the owner is a member again'",
    )


def _approval_pins_policy() -> dict[str, Any]:
    """An approval records, per dataset, the current manifest hash and tier, so approvers
    approve exactly the content and tier that exist (the controller counts an approval only
    for the content it pinned, and the highest tier recorded or current)."""
    entry = "variables.entry"
    name = "params.metadata.name"
    return _policy(
        DECISION_PINS_POLICY,
        _rules("accessrequests", ["UPDATE"]),
        param_kind={"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "Dataset"},
        match_conditions=_APPENDS,
        variables={
            "entry": _NEW_ENTRY,
            "applies": f"{entry}.action == '{_APPROVE}' && {name} in object.spec.datasets",
            "current": "has(params.status) && has(params.status.manifest) ? "
            "params.status.manifest.sha256 : ''",
        },
        validations=[
            _validation(
                "!variables.applies || variables.current != ''",
                "'spec.decisions: dataset ' + params.metadata.name + ' has no verified "
                "manifest yet; wait until the controller has verified it, then approve'",
            ),
            _validation(
                f"!variables.applies || (has({entry}.manifestHashes) && {name} in "
                f"{entry}.manifestHashes && {entry}.manifestHashes[{name}] == "
                "variables.current)",
                "'spec.decisions: the approval must pin the current manifest of dataset ' + "
                "params.metadata.name + ' (manifestHashes[' + params.metadata.name + '] = ' + "
                "variables.current + '); look at the data again and approve what is there now'",
                reason="Invalid",
            ),
            _validation(
                f"!variables.applies || (has({entry}.classifications) && {name} in "
                f"{entry}.classifications && {entry}.classifications[{name}] == "
                "params.spec.classification)",
                "'spec.decisions: the approval must record the current tier of dataset ' + "
                "params.metadata.name + ' (classifications[' + params.metadata.name + '] = ' + "
                "params.spec.classification + ')'",
                reason="Invalid",
            ),
        ],
    )


def _project_four_eyes_policy(settings: Settings) -> dict[str, Any]:
    """An amendment to a project that holds a two-approver dataset needs two approvers too."""
    tiers = [t.value for t in high_tiers(settings)]
    return _policy(
        PROJECT_FOUR_EYES_POLICY,
        _rules("accessrequests/status", ["UPDATE"]),
        match_conditions=[
            *_SETS_APPROVED,
            {
                # Judged when a request becomes Approved, against the workspace it joins.
                "name": "becomes-approved",
                "expression": "!has(oldObject.status) || !has(oldObject.status.phase) || "
                f"oldObject.status.phase != '{RequestPhase.APPROVED.value}'",
            },
        ],
        param_kind={"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "Workspace"},
        variables={
            "decisions": _DECISIONS,
            "approvers": f"({_COUNTED_APPROVERS}).distinct()",
            "needsTwo": "params.metadata.name == object.spec.project && "
            "has(params.spec.datasets) && params.spec.datasets.exists(d, d.classification in "
            f"{_cel_list(tiers)})",
        },
        validations=[
            _validation(
                "!variables.needsTwo || size(variables.approvers) >= 2",
                "'status.phase: Approved needs approvals by two different people, because "
                "project ' + object.spec.project + ' already holds data at a two-approver "
                "tier; approved so far by: ' + variables.approvers.join(', ')",
            ),
        ],
    )


# --- Dataset and Workspace ---------------------------------------------------------------------


def _dataset_label_policy() -> dict[str, Any]:
    label = f"object.metadata.labels[{cel_str(CLASSIFICATION_LABEL)}]"
    return _policy(
        DATASET_LABEL_POLICY,
        _rules("datasets", ["CREATE", "UPDATE"]),
        validations=[
            _validation(
                "!has(object.metadata.labels) || "
                f"!({cel_str(CLASSIFICATION_LABEL)} in object.metadata.labels) || "
                f"{label} == object.spec.classification",
                f"\"metadata.labels['{CLASSIFICATION_LABEL}']: must equal "
                "spec.classification '\" + object.spec.classification + \"' (got '\" + "
                f'{label} + "\'); correct the label or remove it"',
                reason="Invalid",
            ),
        ],
    )


def _source_location(dataset: str) -> str:
    """CEL: `s3://<bucket>/<prefix>` or `nfs://<server><path>`, always ending in '/'.

    With the trailing '/', one location contains another exactly when it is a prefix of it
    as text ('cohort/' does not contain 'cohort-2/'; '' is the whole bucket, '/' the whole
    server). Bucket and server names hold no '/', so a name cannot run into the next one.
    The CRD gives each location one spelling (no '//', '.' or '..' segment, no trailing '/'
    on a path, a lower-case server name without trailing '.' and not an address), so text
    is location. `planning.datasets.source_location` is the same in Python.
    """
    s3, nfs = f"{dataset}.spec.source.s3", f"{dataset}.spec.source.nfs"
    prefix = f"(has({s3}.prefix) ? {s3}.prefix : '')"
    path = f"{nfs}.path"
    return (
        f"has({s3}) ? 's3://' + {s3}.bucket + '/' + "
        f"({prefix} == '' || {prefix}.endsWith('/') ? {prefix} : {prefix} + '/') : "
        f"'nfs://' + {nfs}.server + ({path}.endsWith('/') ? {path} : {path} + '/')"
    )


_TIER_RANK: Final = "{" + ", ".join(f"'{t.value}': {t.rank}" for t in ClassificationTier) + "}"


def _dataset_steward_policy() -> dict[str, Any]:
    return _policy(
        DATASET_STEWARD_POLICY,
        _rules("datasets", ["UPDATE"]),
        validations=[
            _validation(
                "oldObject.spec.steward == request.userInfo.username",
                "request.userInfo.username + ' may not change dataset ' + "
                "oldObject.metadata.name + ': only its steward ' + oldObject.spec.steward + "
                "' may (a steward hands a dataset over by setting spec.steward); ask them'",
            ),
        ],
    )


def _dataset_overlap_policy() -> dict[str, Any]:
    mine, theirs = "object", "params"
    return _policy(
        DATASET_OVERLAP_POLICY,
        _rules("datasets", ["CREATE", "UPDATE"]),
        match_conditions=[
            {
                "name": "creates-or-changes-classification",
                "expression": "request.operation == 'CREATE' || "
                "object.spec.classification != oldObject.spec.classification",
            }
        ],
        param_kind={"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "Dataset"},
        variables={
            "other": f"{theirs}.metadata.name != {mine}.metadata.name",
            "mine": _source_location(mine),
            "theirs": _source_location(theirs),
            "myRank": f"{_TIER_RANK}[{mine}.spec.classification]",
            "theirRank": f"{_TIER_RANK}[{theirs}.spec.classification]",
        },
        validations=[
            _validation(
                "!variables.other || !variables.mine.startsWith(variables.theirs) || "
                "variables.theirRank >= variables.myRank",
                "'spec.source: ' + variables.mine + ' lies within ' + variables.theirs + "
                "' of dataset ' + params.metadata.name + ' (' + params.spec.classification + "
                "'), so the data of dataset ' + object.metadata.name + ' (' + "
                "object.spec.classification + ') would be readable at the lower tier ' + "
                "params.spec.classification + '; raise dataset ' + params.metadata.name + "
                "' to ' + object.spec.classification + ' first, or register a source that "
                "does not overlap'",
            ),
            _validation(
                "!variables.other || !variables.theirs.startsWith(variables.mine) || "
                "variables.myRank >= variables.theirRank",
                "'spec.source: ' + variables.mine + ' contains ' + variables.theirs + "
                "' of dataset ' + params.metadata.name + ' (' + params.spec.classification + "
                "'), whose data would then be readable at the lower tier ' + "
                "object.spec.classification + ' through dataset ' + object.metadata.name + "
                "'; classify ' + object.metadata.name + ' as ' + params.spec.classification + "
                "' or higher, or register a source that does not overlap'",
            ),
        ],
    )


def _dataset_platform_bucket_policy(settings: Settings) -> dict[str, Any]:
    """No dataset source names a bucket of the platform's own (`settings.platform_buckets`).
    `planning.datasets.platform_bucket_refusal` says the same in Python, for `tre`."""
    buckets = settings.platform_buckets
    s3 = "object.spec.source.s3"
    return _policy(
        DATASET_PLATFORM_BUCKET_POLICY,
        _rules("datasets", ["CREATE", "UPDATE"]),
        validations=[
            _validation(
                f"!has({s3}) || !({s3}.bucket in {_cel_list(buckets)})",
                f"'spec.source.s3.bucket: ' + {s3}.bucket + "
                + cel_str(platform_bucket_reason(buckets)),
                reason="Invalid",
            )
        ],
    )


# The kinds whose metadata the platform guards (`tre-resource-metadata`), and those of them
# the controller holds with its finalizer until their records are in the audit log.
_GUARDED_METADATA: Final = ("datasets", "accessrequests", "exportrequests")
_AUDITED_KINDS: Final = ("accessrequests", "exportrequests")


def _resource_metadata_policy(controller: str) -> dict[str, Any]:
    """Nobody gives a Dataset, AccessRequest or ExportRequest an owner reference, and nobody
    but the controller adds or lifts a finalizer on one: the controller's own
    (`names.AUDITED_FINALIZER`), on requests and exports only.

    People who may update these objects (stewards, approvers, output checkers and members
    through the airlock) could otherwise have the garbage collector delete one by naming an
    owner that does not exist (access gone with no decision and no audit entry), hold a
    deletion, or a whole project namespace's teardown, with a finalizer of their own, or
    lift the controller's and delete an object before its records are in the audit log.
    Removing anyone else's finalizer stays allowed: the garbage collector lifts the ones the
    API server adds for a foreground or orphaning delete."""
    audited = cel_str(names.AUDITED_FINALIZER)
    kind, plural = "request.kind.kind", "request.resource.resource"
    return _policy(
        METADATA_POLICY,
        _rules(list(_GUARDED_METADATA), ["CREATE", "UPDATE"]),
        variables={
            "controller": f"request.userInfo.username == {cel_str(controller)}",
            "audited": f"{plural} in {_cel_list(_AUDITED_KINDS)}",
            "oldOwners": "oldObject != null && has(oldObject.metadata.ownerReferences) ? "
            "oldObject.metadata.ownerReferences : []",
            "owners": "has(object.metadata.ownerReferences) ? object.metadata.ownerReferences : []",
            "oldFinalizers": "oldObject != null && has(oldObject.metadata.finalizers) ? "
            "oldObject.metadata.finalizers : []",
            "finalizers": "has(object.metadata.finalizers) ? object.metadata.finalizers : []",
            "added": "variables.finalizers.filter(f, !(f in variables.oldFinalizers))",
            "a": f"{kind}.matches('^[AEIOU]') ? 'an ' : 'a '",
        },
        validations=[
            _validation(
                "variables.owners.all(e, e in variables.oldOwners)",
                f"'metadata.ownerReferences: ' + variables.a + {kind} + ' takes none: the garbage "
                f"collector would delete it once its owner is gone, and ' + {plural} + ' are "
                "deleted by administrators only; remove the entry'",
                reason="Invalid",
            ),
            _validation(
                f"variables.added.all(f, variables.audited && variables.controller && "
                f"f == {audited})",
                f"variables.audited ? 'metadata.finalizers: ' + variables.added.join(', ') + "
                f"': only the controller ({controller}) adds a finalizer to an ' + {kind} + ', "
                f"its own ({names.AUDITED_FINALIZER}); any other would hold its deletion; "
                "remove the entry' : 'metadata.finalizers: ' + variables.a + "
                f"{kind} + ' takes none: its deletion would then wait on whoever set it, and ' "
                f"+ {plural} + ' are deleted by administrators only; remove the entry'",
                reason="Invalid",
            ),
            _validation(
                f"!({audited} in variables.oldFinalizers) || {audited} in variables.finalizers "
                "|| variables.controller",
                f"'metadata.finalizers: {names.AUDITED_FINALIZER} is lifted by the controller "
                f"({controller}) only, once every record of this ' + {kind} + ' is in the "
                "audit log; keep it'",
            ),
        ],
    )


def _workspace_policy(controller_user: str) -> dict[str, Any]:
    return _policy(
        WORKSPACE_POLICY,
        _rules(["workspaces", "workspaces/status"], ["CREATE", "UPDATE", "DELETE"]),
        validations=[
            _validation(
                f"request.userInfo.username == {cel_str(controller_user)}",
                "request.userInfo.username + ' may not write workspaces: only the "
                f"controller ({controller_user}) does, from the approved access requests; "
                "change the access requests instead'",
            ),
        ],
    )


# --- Project namespaces ------------------------------------------------------------------------


def _project_namespace_policy(settings: Settings, controller: str) -> dict[str, Any]:
    """Only the controller creates, changes or deletes a project namespace.

    A project namespace is one carrying the project label (before or after the change) or
    named with the project prefix outside the platform's own namespaces. So nobody can squat
    `tre-<slug>` before a project gets it, label a namespace of theirs as a project, or remove
    the label that puts a namespace under the project policies.
    """
    platform = sorted(names.platform_namespaces(settings))
    label = cel_str(LABEL_PROJECT)
    return _policy(
        PROJECT_NAMESPACE_POLICY,
        _rules(["namespaces"], ["CREATE", "UPDATE", "DELETE"], group="", version="v1"),
        variables={
            "labelled": f"(object != null && has(object.metadata.labels) && {label} in "
            f"object.metadata.labels) || (oldObject != null && "
            f"has(oldObject.metadata.labels) && {label} in oldObject.metadata.labels)",
            "name": "object != null ? object.metadata.name : oldObject.metadata.name",
            "project": f"variables.labelled || (variables.name.startsWith("
            f"{cel_str(names.NAMESPACE_PREFIX)}) && !(variables.name in {_cel_list(platform)}))",
        },
        validations=[
            _validation(
                f"!variables.project || request.userInfo.username == {cel_str(controller)} "
                f"|| {cluster_controller_exemption(objects_in_namespace=False)}",
                "'namespace ' + variables.name + ': project namespaces (label "
                f"{LABEL_PROJECT} or prefix {names.NAMESPACE_PREFIX}) are created, changed and "
                "deleted by the controller only; file an access request for a project, or "
                "choose a name without that prefix'",
            ),
        ],
    )


_PROJECT_OBJECT_RESOURCES: Final = {
    "": [
        "persistentvolumeclaims",
        "serviceaccounts",
        "resourcequotas",
        "limitranges",
        "configmaps",
        "secrets",
    ],
    "networking.k8s.io": ["networkpolicies"],
    "rbac.authorization.k8s.io": ["roles", "rolebindings"],
}


def _project_objects_policy(controller: str) -> dict[str, Any]:
    """In project namespaces only the controller writes the objects that confine or grant:
    NetworkPolicies, Roles and RoleBindings, claims, ServiceAccounts (and their token
    Secrets), quotas, limits, the workspace access ConfigMap."""
    rules = [
        {
            "apiGroups": [group],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": resources,
        }
        for group, resources in _PROJECT_OBJECT_RESOURCES.items()
    ]
    return _policy(
        PROJECT_OBJECTS_POLICY,
        {"resourceRules": rules},
        validations=[
            _validation(
                f"request.userInfo.username == {cel_str(controller)} || "
                f"{cluster_controller_exemption()}",
                "request.userInfo.username + ' may not ' + request.operation.lowerAscii() + "
                "' ' + request.resource.resource + ' in project namespace ' + "
                "request.namespace + ': only the controller writes there, from the approved "
                "access requests; change the access requests instead'",
            ),
        ],
    )


def _controller_scope_policy(settings: Settings, controller: str) -> dict[str, Any]:
    """The controller's own writes are confined to project namespaces and its own
    PersistentVolumes, so its credential cannot be used against the rest of the cluster
    (a RoleBinding in kube-system, a PV onto any bucket, another team's NetworkPolicies)."""
    label = cel_str(LABEL_PROJECT)
    prefix = cel_str(names.NAMESPACE_PREFIX)
    target = "(object != null ? object : oldObject)"
    rules = [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": [
                "namespaces",
                "persistentvolumes",
                "persistentvolumeclaims",
                "serviceaccounts",
                "resourcequotas",
                "limitranges",
                "configmaps",
                "pods",
            ],
        },
        {
            "apiGroups": ["networking.k8s.io"],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": ["networkpolicies"],
        },
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": ["rolebindings"],
        },
    ]
    own = cel_str(names.SYSTEM_NAMESPACE)
    return _policy(
        CONTROLLER_SCOPE_POLICY,
        {"resourceRules": rules},
        match_conditions=[
            {
                "name": "by-the-controller",
                "expression": f"request.userInfo.username == {cel_str(controller)}",
            }
        ],
        variables={
            "target": target,
            "inProject": f"namespaceObject != null && has(namespaceObject.metadata.labels) && "
            f"{label} in namespaceObject.metadata.labels",
            # Its own namespace: only the ConfigMaps that publish the audit head and the
            # open requests (the filing limit's parameter).
            "ownObject": f"namespaceObject != null && namespaceObject.metadata.name == {own} "
            "&& request.resource.resource == 'configmaps' && request.name in "
            f"{_cel_list([names.AUDIT_HEAD_CONFIGMAP, names.OPEN_REQUESTS_CONFIGMAP])}",
            "projectNamespace": f"has(variables.target.metadata.labels) && {label} in "
            f"variables.target.metadata.labels && variables.target.metadata.name == {prefix} "
            f"+ variables.target.metadata.labels[{label}]",
            # The configured driver only, and no Secret but the platform's endpoint Secret: a
            # PV naming another Secret would hand the node plugin whatever credentials that
            # Secret holds (k8s-csi-s3 mounts with the keys in its stage secret).
            "datasetCsi": "variables.target.spec.csi.driver == "
            f"{cel_str(settings.dataset_csi_driver.value)} && "
            "!has(variables.target.spec.csi.nodePublishSecretRef) && "
            "!has(variables.target.spec.csi.controllerPublishSecretRef) && "
            "!has(variables.target.spec.csi.controllerExpandSecretRef) && "
            "!has(variables.target.spec.csi.nodeExpandSecretRef) && "
            "(!has(variables.target.spec.csi.nodeStageSecretRef) || "
            "(variables.target.spec.csi.nodeStageSecretRef.name == "
            f"{cel_str(names.DATASET_S3_SECRET)} && "
            "variables.target.spec.csi.nodeStageSecretRef.namespace == "
            f"{cel_str(names.SYSTEM_NAMESPACE)}))",
            # Variables see only those before them, so this comes after datasetCsi.
            "datasetVolume": f"variables.target.metadata.name.startsWith({prefix}) && "
            "has(variables.target.spec.claimRef) && has(variables.target.spec.claimRef.namespace) "
            f"&& variables.target.spec.claimRef.namespace.startsWith({prefix}) && "
            "((has(variables.target.spec.csi) && variables.datasetCsi) || "
            "has(variables.target.spec.nfs))",
        },
        validations=[
            _validation(
                "request.resource.resource == 'namespaces' || "
                "request.resource.resource == 'persistentvolumes' || variables.inProject || "
                "variables.ownObject",
                "'the controller may not ' + request.operation.lowerAscii() + ' ' + "
                "request.resource.resource + ' in namespace ' + request.namespace + ': it "
                "writes only in project namespaces'",
            ),
            _validation(
                "request.resource.resource != 'namespaces' || variables.projectNamespace",
                "'the controller may not ' + request.operation.lowerAscii() + ' namespace ' + "
                f"request.name + ': only {names.NAMESPACE_PREFIX}<project> namespaces carrying "
                f"the label {LABEL_PROJECT}'",
            ),
            _validation(
                "request.resource.resource != 'persistentvolumes' || variables.datasetVolume",
                "'the controller may not ' + request.operation.lowerAscii() + ' "
                f"PersistentVolume ' + request.name + ': only {names.NAMESPACE_PREFIX}* dataset "
                f"volumes of the {settings.dataset_csi_driver.value} CSI driver (naming no "
                f"Secret but {names.SYSTEM_NAMESPACE}/{names.DATASET_S3_SECRET}) or NFS, "
                "claimed from a project namespace'",
            ),
            # Not on DELETE: a volume written before this rule must still be removable.
            _validation(
                "request.resource.resource != 'persistentvolumes' || object == null || "
                + _dataset_mount_configuration(settings, "variables.target.spec"),
                "'the controller may not ' + request.operation.lowerAscii() + ' "
                "PersistentVolume ' + request.name + ': its mount options, volume attributes "
                "or NFS server and path are not the planned ones (each value a dataset gives "
                "is one word of its domain type; nothing else reaches the mounter, which runs "
                "as root)'",
            ),
        ],
    )


def _read_grants_policies(controller: str) -> list[dict[str, Any]]:
    """The controller's ClusterRoles and ClusterRoleBindings are the people's read grants
    (planning/read_grants.py) and nothing else: named `tre-reads-*`, a role only `get` on
    AccessRequests or Workspaces by name, its binding to that role and one person. RBAC alone
    would let its credential bind its own rights (it holds them all) to anyone, or to
    everyone signed in. One policy per kind: the API server type-checks each expression
    against every kind its policy matches."""
    prefix = cel_str(names.READ_GRANT_PREFIX)
    rule = (
        f"r.apiGroups == [{cel_str(API_GROUP)}] && size(r.resources) == 1 && "
        "r.resources[0] in ['accessrequests', 'workspaces'] && r.verbs == ['get'] && "
        "has(r.resourceNames) && size(r.resourceNames) > 0 && !has(r.nonResourceURLs)"
    )
    shapes = {
        (READ_GRANTS_POLICY, "clusterroles"): _validation(
            "object == null || (!has(object.aggregationRule) && has(object.rules) && "
            f"object.rules.all(r, {rule}))",
            "'ClusterRole ' + request.name + ': a read grant holds only get on "
            "accessrequests or workspaces, by resourceNames'",
        ),
        (READ_GRANT_BINDINGS_POLICY, "clusterrolebindings"): _validation(
            "object == null || (object.roleRef.kind == 'ClusterRole' && "
            "object.roleRef.name == request.name && has(object.subjects) && "
            "size(object.subjects) == 1 && object.subjects[0].kind in ['User', "
            "'ServiceAccount'])",
            "'ClusterRoleBinding ' + request.name + ': a read grant binds the ClusterRole "
            "of its own name to one person (a User or ServiceAccount, never a Group)'",
        ),
    }
    return [
        _policy(
            name,
            _rules(
                resource,
                ["CREATE", "UPDATE", "DELETE"],
                group="rbac.authorization.k8s.io",
                version="v1",
            ),
            match_conditions=[
                {
                    "name": "by-the-controller",
                    "expression": f"request.userInfo.username == {cel_str(controller)}",
                }
            ],
            validations=[
                _validation(
                    f"request.name.startsWith({prefix})",
                    "'the controller may not ' + request.operation.lowerAscii() + ' ' + "
                    f"request.resource.resource + ' ' + request.name + ': only the read "
                    f"grants {names.READ_GRANT_PREFIX}*'",
                ),
                shape,
            ],
        )
        for (name, resource), shape in shapes.items()
    ]


def _dataset_mount_configuration(settings: Settings, spec: str) -> str:
    """CEL: the PV `spec` configures its mounter exactly as `planning.storage` plans it, with
    each value from a Dataset valid for its domain type (security invariant 11). A second
    line behind the CRD's own rules: whatever writes the controller's PVs, the node plugin
    and the kubelet, which run as root, get no option, flag or value of anyone's choosing."""
    options = f"(has({spec}.mountOptions) ? {spec}.mountOptions : [])"
    nfs = (
        f"{options} == {_cel_list(storage.NFS_MOUNT_OPTIONS)} && "
        + rules.validate_nfs_server.cel_check(f"{spec}.nfs.server")
        + " && "
        + rules.validate_nfs_path.cel_check(f"{spec}.nfs.path")
    )
    attributes = f"{spec}.csi.volumeAttributes"
    if settings.dataset_csi_driver is DatasetCsiDriver.K8S_CSI_S3:
        fixed = " ".join(storage.RCLONE_OPTIONS) + " --s3-region "
        region = f"{attributes}.options.substring({len(fixed)})"
        # The handle is `<bucket>` or `<bucket>/<prefix>` (the driver splits it at the first
        # '/'); rclone gets it as one argument, but it names what is mounted.
        handle, slash = f"{spec}.csi.volumeHandle", f"{spec}.csi.volumeHandle.indexOf('/')"
        csi = (
            f"!has({spec}.mountOptions) && has({spec}.csi.volumeAttributes) && "
            f"{attributes}.size() == 2 && 'mounter' in {attributes} && 'options' in {attributes} "
            f"&& {attributes}.mounter == 'rclone' && "
            f"{attributes}.options.startsWith({cel_str(fixed)}) && "
            + rules.validate_s3_region.cel_check(region)
            + f" && ({slash} < 0 ? "
            + rules.validate_bucket_name.cel_check(handle)
            + " : "
            + rules.validate_bucket_name.cel_check(f"{handle}.substring(0, {slash})")
            + " && "
            + rules.validate_s3_prefix.cel_check(f"{handle}.substring({slash} + 1)")
            + ")"
        )
    else:
        word = {
            "prefix ": rules.validate_s3_prefix,
            "region ": rules.validate_s3_region,
        }
        allowed = " || ".join(
            [
                f"o in {_cel_list(storage.MOUNTPOINT_OPTIONS)}",
                *(
                    f"(o.startsWith({cel_str(key)}) && "
                    f"{rule.cel_check(f'o.substring({len(key)})')})"
                    for key, rule in word.items()
                ),
                f"(o.startsWith('endpoint-url ') && o.substring({len('endpoint-url ')})"
                f".matches({cel_str(rules.S3_ENDPOINT_PATTERN)}))",
            ]
        )
        csi = (
            f"has({spec}.csi.volumeAttributes) && {attributes}.size() == 1 && "
            f"'bucketName' in {attributes} && "
            + rules.validate_bucket_name.cel_check(f"{attributes}.bucketName")
            + f" && {options}.all(o, {allowed})"
        )
    return f"(has({spec}.nfs) ? ({nfs}) : has({spec}.csi) && ({csi}))"


# --- Pods -----------------------------------------------------------------------------------


def _pod_access_policy(settings: Settings) -> dict[str, Any]:
    """Pods in a project namespace: only from the hub, only while the workspace is Ready,
    only for a member, only with the project's claims (dataset claims read-only) and the few
    ephemeral volume kinds a notebook needs, and with the browser gate beside whatever mounts
    the workspace's storage (`tre check`'s probe pods mount nothing and need none). The
    parameter is the namespace's workspace access ConfigMap, which only the controller
    writes; no ConfigMap, no pod."""
    hub = names.hub_user(settings)
    user = f"object.metadata.annotations[{cel_str(names.ANNOTATION_USER)}]"
    claim = "v.persistentVolumeClaim"
    token_volume = notebook_pods.GATE_TOKEN_VOLUME
    audience = notebook_pods.GATE_TOKEN_AUDIENCE
    gate_uid = notebook_pods.GATE_UID
    # The gate's token and nothing else: one source, the pod's ServiceAccount token for the
    # gate's audience (which the API server itself does not accept).
    gate_token = (
        f"v.name == {cel_str(token_volume)} && has(v.projected) && "
        "size(v.projected.sources) == 1 && has(v.projected.sources[0].serviceAccountToken) && "
        "has(v.projected.sources[0].serviceAccountToken.audience) && "
        f"v.projected.sources[0].serviceAccountToken.audience == {cel_str(audience)}"
    )
    return _policy(
        POD_ACCESS_POLICY,
        _rules(["pods"], ["CREATE"], group="", version="v1"),
        param_kind={"apiVersion": "v1", "kind": "ConfigMap"},
        variables={
            "members": "params.data.members.split(',')",
            "claims": "params.data.claims.split(',')",
            "volumes": "has(object.spec.volumes) ? object.spec.volumes : []",
            "containers": "object.spec.containers + (has(object.spec.initContainers) ? "
            "object.spec.initContainers : [])",
        },
        validations=[
            _validation(
                f"request.userInfo.username == {cel_str(hub)}",
                "request.userInfo.username + ' may not start pods in project namespace ' + "
                "request.namespace + ': only JupyterHub does, for members of a Ready "
                "workspace; start a server from the hub'",
            ),
            _validation(
                "params.data.phase == 'Ready'",
                "'project namespace ' + request.namespace + ' is ' + params.data.phase + "
                "': no server may start until its workspace is Ready'",
            ),
            _validation(
                "has(object.metadata.annotations) && "
                f"{cel_str(names.ANNOTATION_USER)} in object.metadata.annotations && "
                f"{user} != '' && {user} in variables.members",
                f"'metadata.annotations[{names.ANNOTATION_USER}]: the pod must belong to a "
                "member of the workspace in ' + request.namespace",
            ),
            _validation(
                f"variables.volumes.all(v, has(v.persistentVolumeClaim) ? "
                f"({claim}.claimName in variables.claims && "
                f"(!{claim}.claimName.startsWith('ds-') || "
                f"(has({claim}.readOnly) && {claim}.readOnly))) : "
                f"(has(v.emptyDir) || has(v.downwardAPI) || ({gate_token})))",
                "'spec.volumes: only the workspace claims (' + params.data.claims + ', dataset "
                "claims read-only), emptyDir and downwardAPI volumes and the browser gate\\'s "
                f"token (volume {token_volume}, audience {audience}) are allowed in project "
                "namespace ' + request.namespace",
            ),
            _validation(
                "variables.containers.all(c, c.name == "
                f"{cel_str(notebook_pods.GATE_CONTAINER)} || !has(c.volumeMounts) || "
                f"c.volumeMounts.all(m, m.name != {cel_str(token_volume)}))",
                f"'spec.containers: only the browser gate mounts volume {token_volume}: it "
                "proves to the airlock which pod its records come from'",
            ),
            _validation(
                "!variables.volumes.exists(v, has(v.persistentVolumeClaim)) || "
                "object.spec.containers.exists_one(c, c.name == "
                f"{cel_str(notebook_pods.GATE_CONTAINER)} && has(c.securityContext) && "
                f"has(c.securityContext.runAsUser) && c.securityContext.runAsUser == {gate_uid} "
                "&& has(c.securityContext.readOnlyRootFilesystem) && "
                "c.securityContext.readOnlyRootFilesystem)",
                f"'spec.containers: a pod that mounts the workspace\\'s storage runs the "
                f"browser gate beside it (container {notebook_pods.GATE_CONTAINER}, user "
                f"{gate_uid}, read-only root): start servers from the hub'",
            ),
        ],
    )


def _platform_peers_policy(settings: Settings) -> dict[str, Any]:
    """A pod in a platform namespace wears a label the project NetworkPolicies trust (the
    hub's, the proxy's, the airlock's, the resolver's) only when it runs as the platform's
    ServiceAccount for that role (`network_policies.platform_peers`): another pod there,
    whoever creates it, cannot pass for the hub to every notebook. Kubernetes has no right
    to "use" a ServiceAccount, so a pod creator in that namespace may still name the account;
    the pod then holds the role's token and powers, and nothing more than the role."""
    peers = platform_peers(settings)
    namespaces = sorted({peer.namespace for peer in peers})
    return _policy(
        PLATFORM_PEERS_POLICY,
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": namespaces}
                ]
            },
            "resourceRules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["pods"],
                }
            ],
        },
        variables={
            "labels": "has(object.metadata.labels) ? object.metadata.labels : {}",
            "account": "has(object.spec.serviceAccountName) ? "
            "object.spec.serviceAccountName : 'default'",
        },
        validations=[
            _validation(
                f"!(request.namespace == {cel_str(peer.namespace)} && "
                f"{cel_str(peer.label[0])} in variables.labels && "
                f"variables.labels[{cel_str(peer.label[0])}] == {cel_str(peer.label[1])}) || "
                f"variables.account == {cel_str(peer.service_account)}",
                f"'label {peer.label[0]}={peer.label[1]} in namespace {peer.namespace} makes a "
                f"pod the {peer.role} in the NetworkPolicies of every project: only a pod run by "
                f"ServiceAccount {peer.service_account or '(none configured)'} may wear it, not "
                f"' + variables.account + '; remove the label, or run the {peer.role} itself'",
            )
            for peer in peers
        ],
    )


def _pod_no_exec_policy() -> dict[str, Any]:
    """Nobody attaches to, execs in, port-forwards to or adds a container to a running
    notebook: the data leaves a workspace only through the airlock. An admin who must
    debug one deletes this binding first, which the API server's audit log records."""
    return _policy(
        POD_NO_EXEC_POLICY,
        {
            "resourceRules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CONNECT"],
                    "resources": ["pods/exec", "pods/attach", "pods/portforward"],
                },
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["UPDATE", "CREATE"],
                    "resources": ["pods/ephemeralcontainers"],
                },
            ]
        },
        validations=[
            _validation(
                "false",
                message="pods in project namespaces cannot be exec'd into, attached to, "
                "port-forwarded or given extra containers: data leaves a workspace only "
                "through the airlock",
            ),
        ],
    )


# --- BrowserActivities (the browser gates' records, filed by the airlock) ---------------------


def _browser_activity_policy(settings: Settings) -> dict[str, Any]:
    """Only the airlock files a browser gate's records, in a project namespace and for that
    namespace's project: anyone else's (an admin's included) would be a record nobody's gate
    wrote. Changes are refused by the CRD (the spec is immutable); only the controller deletes
    one, after auditing it (RBAC)."""
    label = cel_str(LABEL_PROJECT)
    return _policy(
        BROWSER_ACTIVITY_POLICY,
        _rules(["browseractivities"], ["CREATE"]),
        validations=[
            _validation(
                f"request.userInfo.username == {cel_str(settings.airlock_user)}",
                "request.userInfo.username + ' may not file browser activity: only the "
                "airlock does, for the browser gate that sent it'",
            ),
            _validation(
                f"has(namespaceObject.metadata.labels) && {label} in "
                f"namespaceObject.metadata.labels && object.spec.project == "
                f"namespaceObject.metadata.labels[{label}]",
                "'spec.project: browser activity is filed in its project\\'s namespace, not ' "
                "+ request.namespace",
                reason="Invalid",
            ),
        ],
    )


# --- ExportRequests (in project namespaces; the workspace access ConfigMap as parameter) ------


def _export_create_policy() -> dict[str, Any]:
    """A member of a Ready workspace files an export in their own name, in that workspace's
    namespace, with no reviews yet."""
    label = cel_str(LABEL_PROJECT)
    return _policy(
        EXPORT_CREATE_POLICY,
        _rules(["exportrequests"], ["CREATE"]),
        param_kind={"apiVersion": "v1", "kind": "ConfigMap"},
        validations=[
            _via_airlock_validation("file"),
            _notebook_project_validation(),
            _validation(
                "object.spec.author == request.userInfo.username",
                "'spec.author: must be the caller ' + request.userInfo.username + ' (got ' + "
                "object.spec.author + '); submit exports under your own name'",
            ),
            _validation(
                "params.data.phase == 'Ready' && "
                "object.spec.author in params.data.members.split(',')",
                "'spec.author: ' + object.spec.author + ' is not a member of a Ready workspace "
                "in ' + request.namespace + '; only its members export from it'",
            ),
            _validation(
                f"object.spec.project == namespaceObject.metadata.labels[{label}]",
                "'spec.project: must be the project of namespace ' + request.namespace",
                reason="Invalid",
            ),
            _validation(
                "(!has(object.spec.reviews) || size(object.spec.reviews) == 0) && "
                "(!has(object.spec.withdrawn) || !object.spec.withdrawn)",
                message="spec.reviews: must be empty when an export is submitted; output "
                "checkers append their reviews afterwards",
                reason="Invalid",
            ),
        ],
    )


def _via_airlock_validation(verb: str, *, exempt: str | None = None) -> dict[str, str]:
    """A person's change of an export only through the airlock: it impersonates the person
    with its own user extra, which nobody else may assert (planning/rbac.py). People hold
    create/update on exports only because the airlock's impersonated writes are authorized
    as them; without the extra such a write is theirs alone, and refused (its answer would
    carry the whole object, hidden reviews included)."""
    key = cel_str(names.AIRLOCK_VIA_EXTRA)
    via = (
        f"has(request.userInfo.extra) && {key} in request.userInfo.extra && "
        f"request.userInfo.extra[{key}] == [{cel_str(names.AIRLOCK_VIA_VALUE)}]"
    )
    allowed = f"({exempt}) || {via}" if exempt else via
    return _validation(
        allowed,
        f"request.userInfo.username + ' may {verb} exports only through the airlock (tre "
        "export, or its page): it applies the rules people see, such as reviews hidden "
        "until the decision'",
    )


def _from_notebook() -> str:
    """CEL: the airlock made this call for a notebook's token (its workspace extra)."""
    key = cel_str(names.AIRLOCK_WORKSPACE_EXTRA)
    return f"(has(request.userInfo.extra) && {key} in request.userInfo.extra)"


def _notebook_project_validation() -> dict[str, str]:
    """A notebook's token acts on its own project's exports only (the airlock names the
    notebook's project in a user extra; the airlock refuses first, this holds regardless)."""
    key = cel_str(names.AIRLOCK_WORKSPACE_EXTRA)
    return _validation(
        f"!{_from_notebook()} || request.userInfo.extra[{key}] == [object.spec.project]",
        f"'spec.project: ' + object.spec.project + ' is not the project of the notebook ' + "
        f"request.userInfo.extra[{key}].join(', ') + ' whose token made this call; a "
        "notebook acts on exports of its own project only'",
    )


_EXPORT_FINAL: Final = ("Approved", "Rejected", "Returned", "Released", "Withdrawn", "Revoked")


def _export_update_policy(settings: Settings, controller: str) -> dict[str, Any]:
    """Only reviews grow, one per update, each by the caller, an output checker who is neither
    the author nor anyone who has been a member, lead or owner of the project (the access
    ConfigMap's `people`, which never shrinks), once per checker, covering every file, while
    the workspace is Ready, and none after a decision; only the author withdraws, once. The
    controller changes no spec: it only sets and lifts its finalizer (`tre-resource-metadata`
    judges that)."""
    group = settings.output_checker_group
    entry = "variables.entry"
    appended = "!variables.appended || "
    return _policy(
        EXPORT_UPDATE_POLICY,
        _rules(["exportrequests"], ["UPDATE"]),
        param_kind={"apiVersion": "v1", "kind": "ConfigMap"},
        variables={
            "old": "has(oldObject.spec.reviews) ? oldObject.spec.reviews : []",
            "reviews": "has(object.spec.reviews) ? object.spec.reviews : []",
            "appended": "size(variables.reviews) > size(variables.old)",
            "entry": "variables.reviews[size(variables.reviews) - 1]",
            "wasWithdrawn": "has(oldObject.spec.withdrawn) && oldObject.spec.withdrawn",
            "withdraws": "has(object.spec.withdrawn) && object.spec.withdrawn && "
            "!variables.wasWithdrawn",
            "decided": "has(oldObject.status) && has(oldObject.status.phase) && "
            f"oldObject.status.phase in {_cel_list(_EXPORT_FINAL)}",
            "changedFields": "oldObject.spec.filter(k, !(k in ['reviews', 'withdrawn']) && "
            "(!(k in object.spec) || object.spec[k] != oldObject.spec[k])) + "
            "object.spec.filter(k, !(k in ['reviews', 'withdrawn']) && !(k in oldObject.spec))",
        },
        validations=[
            _via_airlock_validation(
                "change",
                exempt=f"{cluster_controller_exemption()} || (request.userInfo.username == "
                f"{cel_str(controller)} && object.spec == oldObject.spec)",
            ),
            _notebook_project_validation(),
            _validation(
                f"!variables.appended || !{_from_notebook()}",
                "'spec.reviews: a review comes from a checker signed in in their browser, "
                "never from a notebook (' + request.userInfo.extra["
                f"{cel_str(names.AIRLOCK_WORKSPACE_EXTRA)}][0] + ')'",
            ),
            _validation(
                "size(variables.changedFields) == 0",
                "'spec.' + variables.changedFields.sort().join(', spec.') + ': cannot change "
                "once the export is submitted; submit a new export instead'",
            ),
            _validation(
                "size(variables.reviews) >= size(variables.old) && "
                "variables.reviews.slice(0, size(variables.old)) == variables.old && "
                "size(variables.reviews) <= size(variables.old) + 1",
                message="spec.reviews: append one review per update; earlier reviews cannot "
                "be changed or removed",
            ),
            _validation(
                "!variables.wasWithdrawn || (has(object.spec.withdrawn) && "
                "object.spec.withdrawn && !variables.appended)",
                message="spec.withdrawn: this export was withdrawn; nothing more is decided",
            ),
            _validation(
                "!variables.withdraws || request.userInfo.username == object.spec.author",
                "'spec.withdrawn: only the author ' + object.spec.author + ' withdraws this "
                "export'",
            ),
            _validation(
                f"{appended}!variables.decided",
                "'spec.reviews: this export is already ' + oldObject.status.phase + '; no "
                "further review counts'",
            ),
            _validation(
                f"{appended}{entry}.by == request.userInfo.username",
                f"'spec.reviews: by must be the caller ' + request.userInfo.username + "
                f"' (got ' + {entry}.by + ')'",
            ),
            _validation(
                f"{appended}{cel_str(group)} in request.userInfo.groups",
                "request.userInfo.username + ' is not in group "
                f"{group}, so may not review exports'",
            ),
            _validation(
                f"{appended}request.userInfo.username != object.spec.author && "
                "!(request.userInfo.username in params.data.people.split(','))",
                "'spec.reviews: ' + request.userInfo.username + ' is the author or has been a "
                "member, lead or owner of project ' + object.spec.project + ' and may not "
                "review its exports (reviews are independent); another output checker must "
                "review'",
            ),
            _validation(
                f"{appended}params.data.phase == 'Ready'",
                "'spec.reviews: the workspace of project ' + object.spec.project + ' is ' + "
                "params.data.phase + '; its exports are reviewed only while it is Ready'",
            ),
            _validation(
                f"{appended}!variables.old.exists(r, r.by == request.userInfo.username)",
                "'spec.reviews: ' + request.userInfo.username + ' has already reviewed this "
                "export; a second review must come from another output checker'",
            ),
            _validation(
                f"{appended}object.spec.files.all(f, {entry}.votes.exists(v, v.path == f.path))"
                f" && {entry}.votes.all(v, object.spec.files.exists(f, f.path == v.path))",
                message="spec.reviews: a review votes on every file of the export, and on "
                "nothing else",
                reason="Invalid",
            ),
        ],
    )


# Status fields the airlock's rules judge one by one; it may change no other.
_AIRLOCK_JUDGED: Final = ("phase", "release", "revocation", "access")
_AIRLOCK_PHASES: Final = (ExportPhase.RELEASED.value, ExportPhase.REVOKED.value)
# An export whose files someone may still look at: under review, approved, released (a
# revoked one's quarantined files stay the record of what was reviewed). Not after a
# rejection or a withdrawal: nothing of it is read again.
_ACCESS_PHASES: Final = tuple(
    p.value
    for p in (
        ExportPhase.SUBMITTED,
        ExportPhase.RETURNED,
        ExportPhase.APPROVED,
        ExportPhase.RELEASED,
        ExportPhase.REVOKED,
    )
)


def _export_status_policy(controller: str, airlock: str) -> dict[str, Any]:
    """Two identities write an export's status, each its own fields.

    - The controller writes phase, reviewers and conditions from the reviews. It carries the
      airlock's records over untouched, never moves an export to or from Released or Revoked,
      and Approved needs as many distinct output checkers as the workspace's data asks (the
      access ConfigMap says how many), each approving every output file, none the author or
      a member.
    - The airlock writes only: Approved -> Released with `release` (write-once; it counts
      every output file, and the approvals are judged again, so nothing leaves on reviews
      that no longer count; by the acting lead, `lead`, while the workspace is Ready);
      Released -> Revoked with `revocation` (write-once; by the acting lead or by someone
      who has never been the project's); and appended `access` records (earlier ones
      unchanged, each naming a file of the export; downloads by the acting lead only, views
      by nobody who has been the project's), while the export is under review, approved,
      released or revoked. (Review 3, S8 and S9: the access ConfigMap's `people` never
      shrinks, and its `lead` is '' while the owner is not a member of the Ready workspace.)
    - Nobody else, admins included.
    """
    outputs = "object.spec.files.filter(f, !has(f.kind) || f.kind == 'output').map(f, f.path)"
    judged = _cel_list(_AIRLOCK_JUDGED)
    airlock_phases = _cel_list(_AIRLOCK_PHASES)
    who = (
        f"the controller ({controller}) writes its phase from the reviews, the airlock "
        f"({airlock}) its release, revocation and access records"
    )

    def present(field: str) -> dict[str, str]:
        """had<Field>, has<Field> and <field>Kept for one of the airlock's write-once records."""
        name = field[0].upper() + field[1:]
        return {
            f"had{name}": f"has(oldObject.status) && has(oldObject.status.{field})",
            f"has{name}": f"has(object.status) && has(object.status.{field})",
            f"{field}Kept": f"variables.had{name} == variables.has{name} && "
            f"(!variables.had{name} || object.status.{field} == oldObject.status.{field})",
        }

    return _policy(
        EXPORT_STATUS_POLICY,
        _rules(["exportrequests/status"], ["UPDATE"]),
        param_kind={"apiVersion": "v1", "kind": "ConfigMap"},
        variables={
            "reviews": "has(object.spec.reviews) ? object.spec.reviews : []",
            "people": "params.data.people.split(',')",
            "lead": "params.data.lead",
            "approvers": "variables.reviews.filter(r, r.by != object.spec.author && "
            "!(r.by in variables.people) && "
            f"{outputs}.all(p, r.votes.exists(v, v.path == p && v.vote == 'approve'))"
            ").map(r, r.by).distinct()",
            "controller": f"request.userInfo.username == {cel_str(controller)}",
            "airlock": f"request.userInfo.username == {cel_str(airlock)}",
            # A status not written yet is Submitted (the model's default).
            "oldPhase": "has(oldObject.status) && has(oldObject.status.phase) ? "
            "oldObject.status.phase : 'Submitted'",
            "phase": "has(object.status) && has(object.status.phase) ? object.status.phase : "
            "'Submitted'",
            "releases": "variables.oldPhase == 'Approved' && variables.phase == 'Released'",
            "revokes": "variables.oldPhase == 'Released' && variables.phase == 'Revoked'",
            **present("release"),
            **present("revocation"),
            "oldAccess": "has(oldObject.status) && has(oldObject.status.access) ? "
            "oldObject.status.access : []",
            "access": "has(object.status) && has(object.status.access) ? object.status.access : []",
            # slice() fails on a bound beyond the list: check the size first.
            "accessAppended": "size(variables.access) >= size(variables.oldAccess) && "
            "variables.access.slice(0, size(variables.oldAccess)) == variables.oldAccess",
            "newAccess": "variables.accessAppended ? variables.access.slice("
            "size(variables.oldAccess), size(variables.access)) : []",
            # Views are budgeted, in all and per person; one write appends one person's
            # records, so counting that person's views is one pass over the list.
            "accessBy": "size(variables.newAccess) > 0 ? variables.newAccess[0].by : ''",
            "views": "variables.access.filter(a, a.action == 'view')",
            "viewsAppended": "variables.newAccess.exists(a, a.action == 'view')",
            # The status fields other than those judged one by one, changed, added or removed.
            "oldOthers": f"has(oldObject.status) ? oldObject.status.filter(k, !(k in {judged})) "
            ": []",
            "others": f"has(object.status) ? object.status.filter(k, !(k in {judged})) : []",
            "othersChanged": "variables.oldOthers.filter(k, !(k in variables.others) || "
            "object.status[k] != oldObject.status[k]) + "
            "variables.others.filter(k, !(k in variables.oldOthers))",
            # Judged when an export becomes Approved, and again when it is released.
            "counted": "variables.phase in ['Approved', 'Released'] && "
            "variables.phase != variables.oldPhase",
        },
        validations=[
            _validation(
                "variables.controller || variables.airlock",
                f"request.userInfo.username + ' may not write the status of exports: {who}'",
            ),
            # --- the controller ---
            _validation(
                "!variables.controller || variables.releaseKept",
                message=f"status.release: only the airlock ({airlock}) writes it, once, when "
                "it releases the export; the controller carries it over unchanged",
            ),
            _validation(
                "!variables.controller || variables.revocationKept",
                message=f"status.revocation: only the airlock ({airlock}) writes it, once, "
                "when it revokes a release; the controller carries it over unchanged",
            ),
            _validation(
                "!variables.controller || variables.access == variables.oldAccess",
                message=f"status.access: only the airlock ({airlock}) appends access records; "
                "the controller carries them over unchanged",
            ),
            _validation(
                f"!variables.controller || (variables.phase in {airlock_phases} ? "
                f"variables.phase == variables.oldPhase : !(variables.oldPhase in "
                f"{airlock_phases}))",
                "'status.phase: ' + variables.oldPhase + ' -> ' + variables.phase + ': only "
                f"the airlock ({airlock}) makes an export Released or Revoked, and nothing "
                "moves it back'",
            ),
            # --- the airlock ---
            _validation(
                "!variables.airlock || size(variables.othersChanged) == 0",
                "'status.' + variables.othersChanged.sort().join(', status.') + ': the "
                f"controller ({controller}) writes it from the reviews; the airlock writes "
                "only release, revocation and access'",
            ),
            _validation(
                "!variables.airlock || variables.phase == variables.oldPhase || "
                "variables.releases || variables.revokes",
                "'status.phase: the airlock moves an export only from Approved to Released "
                "and from Released to Revoked (got ' + variables.oldPhase + ' -> ' + "
                "variables.phase + ')'",
            ),
            _validation(
                "!variables.airlock || !variables.hadRelease || variables.releaseKept",
                message="status.release: written once, when the export is released; it "
                "cannot be changed or removed",
            ),
            _validation(
                "!variables.airlock || (variables.releases ? variables.hasRelease : "
                "variables.hadRelease == variables.hasRelease)",
                "'status.release: set exactly when an Approved export becomes Released, and "
                "then required (got ' + variables.oldPhase + ' -> ' + variables.phase + ')'",
            ),
            _validation(
                "!variables.airlock || !variables.hadRevocation || variables.revocationKept",
                message="status.revocation: written once, when a release is revoked; it "
                "cannot be changed or removed",
            ),
            _validation(
                "!variables.airlock || (variables.revokes ? variables.hasRevocation : "
                "variables.hadRevocation == variables.hasRevocation)",
                "'status.revocation: set exactly when a Released export becomes Revoked, and "
                "then required (got ' + variables.oldPhase + ' -> ' + variables.phase + ')'",
            ),
            _validation(
                "!variables.releases || !variables.hasRelease || "
                f"object.status.release.files == size({outputs})",
                "'status.release.files: ' + string(object.status.release.files) + ' released, "
                "but the export has ' + string(size(" + outputs + ")) + ' output files; a "
                "release carries every output file'",
                reason="Invalid",
            ),
            _validation(
                "!variables.airlock || variables.accessAppended",
                message="status.access: earlier access records cannot be changed or removed; "
                "append new ones",
            ),
            _validation(
                "!variables.airlock || size(variables.newAccess) == 0 || "
                f"variables.oldPhase in {_cel_list(_ACCESS_PHASES)}",
                "'status.access: this export is ' + variables.oldPhase + '; none of its files "
                "is viewed or downloaded any more'",
            ),
            _validation(
                "!variables.airlock || variables.newAccess.all(a, a.by == variables.accessBy)",
                message="status.access: append one person's access records per write",
                reason="Invalid",
            ),
            _validation(
                f"!variables.airlock || !variables.viewsAppended || "
                f"size(variables.views) <= {MAX_VIEW_RECORDS}",
                message=f"status.access: this export has had {MAX_VIEW_RECORDS} views, the "
                "most it takes; the remaining records are kept for the lead's downloads. "
                "Submit the files again as a new export to review them further",
            ),
            _validation(
                f"!variables.airlock || !variables.viewsAppended || "
                f"size(variables.views.filter(a, a.by == variables.accessBy)) <= "
                f"{MAX_VIEWS_PER_PERSON}",
                f"'status.access: ' + variables.accessBy + ' has viewed the files of this "
                f"export {MAX_VIEWS_PER_PERSON} times, the most one person may; no one "
                "checker uses up the views of the others, nor the downloads kept for the lead'",
            ),
            _validation(
                "!variables.airlock || variables.newAccess.all(a, a.action != 'download' || "
                "(variables.lead != '' && a.by == variables.lead))",
                "'status.access: only the lead of the project downloads, while a member of the "
                "Ready workspace (' + (variables.lead == '' ? 'nobody now' : variables.lead) + "
                "'); not ' + variables.accessBy",
            ),
            _validation(
                "!variables.airlock || variables.newAccess.all(a, a.action != 'view' || "
                "!(a.by in variables.people))",
                "'status.access: ' + variables.accessBy + ' has been a member, lead or owner "
                "of project ' + object.spec.project + ' and may not view its quarantined "
                "files'",
            ),
            _validation(
                "!variables.releases || !variables.hasRelease || (params.data.phase == 'Ready' "
                "&& variables.lead != '' && object.status.release.by == variables.lead)",
                "'status.release.by: only the lead of the project releases, while a member of "
                "the Ready workspace (' + (variables.lead == '' ? 'nobody now' : "
                "variables.lead) + '; the workspace is ' + params.data.phase + '), not ' + "
                "object.status.release.by",
            ),
            _validation(
                "!variables.revokes || !variables.hasRevocation || "
                "(variables.lead != '' && object.status.revocation.by == variables.lead) || "
                "!(object.status.revocation.by in variables.people)",
                "'status.revocation.by: ' + object.status.revocation.by + ' has been a member, "
                "lead or owner of project ' + object.spec.project + ' and is not its lead now; "
                "an output checker from outside the project, or the lead, revokes'",
            ),
            _validation(
                "!variables.airlock || variables.newAccess.all(a, "
                "object.spec.files.exists(f, f.path == a.path))",
                "'status.access: ' + variables.newAccess.filter(a, "
                "!object.spec.files.exists(f, f.path == a.path)).map(a, a.path).join(', ') + "
                "' is not a file of this export (spec.files[].path)'",
                reason="Invalid",
            ),
            # --- both: what makes an export Approved, and releasable ---
            _validation(
                "!variables.counted || "
                "size(variables.approvers) >= int(params.data.exportReviewers)",
                "'status.phase: ' + variables.phase + ' needs ' + params.data.exportReviewers + "
                "' independent output checkers approving every output file; so far: ' + "
                "(size(variables.approvers) == 0 ? 'nobody' : variables.approvers.join(', '))",
            ),
        ],
    )


def _inline_nfs_policy() -> dict[str, Any]:
    """No pod anywhere mounts an NFS export directly. Restricted pods cannot anyway, but any
    namespace with a looser Pod Security level could mount a dataset's export by its server and
    path, bypassing every approval; datasets reach pods only through the controller's
    read-only PersistentVolumes (`TRE_FORBID_INLINE_NFS=false` turns this off for clusters
    that need inline NFS elsewhere)."""
    return _policy(
        INLINE_NFS_POLICY,
        _rules(["pods"], ["CREATE"], group="", version="v1"),
        validations=[
            _validation(
                "!has(object.spec.volumes) || !object.spec.volumes.exists(v, has(v.nfs))",
                "'spec.volumes: pods may not mount NFS exports directly (' + "
                "object.spec.volumes.filter(v, has(v.nfs)).map(v, v.name).join(', ') + '); "
                "datasets are mounted through their approved, read-only volumes'",
            ),
        ],
    )


def _pod_requires_deny_all_policy() -> dict[str, Any]:
    spec = "params.spec"
    return _policy(
        POD_DENY_ALL_POLICY,
        _rules(["pods"], ["CREATE"], group="", version="v1"),
        param_kind={"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"},
        validations=[
            _validation(
                # selects every pod, covers both directions, allows nothing
                f"!has({spec}.podSelector.matchLabels) && "
                f"!has({spec}.podSelector.matchExpressions) && "
                f"has({spec}.policyTypes) && 'Ingress' in {spec}.policyTypes && "
                f"'Egress' in {spec}.policyTypes && "
                f"(!has({spec}.ingress) || size({spec}.ingress) == 0) && "
                f"(!has({spec}.egress) || size({spec}.egress) == 0)",
                message=f"NetworkPolicy {DENY_ALL_POLICY_NAME} of this namespace no longer "
                "denies all traffic; no pod may start until the controller restores it",
            ),
        ],
    )


_PROJECT_NAMESPACES: Final = {
    "namespaceSelector": {"matchExpressions": [{"key": LABEL_PROJECT, "operator": "Exists"}]}
}


# --- building blocks ---------------------------------------------------------------------------


def _pins(decision: str) -> str:
    """CEL: a decision's manifestHashes, or an empty map."""
    return f"(has({decision}.manifestHashes) ? {decision}.manifestHashes : {{}})"


def cel_str(value: str) -> str:
    """A CEL string literal (JSON's double-quoted escapes are valid CEL)."""
    return json.dumps(value)


def _cel_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(cel_str(v) for v in values) + "]"


def _validation(
    expression: str,
    message_expression: str | None = None,
    *,
    message: str | None = None,
    reason: str = "Forbidden",
) -> dict[str, str]:
    """A validation with a static `message` or a `messageExpression` (CEL string).

    `reason` Forbidden (HTTP 403) for who may do what, Invalid (422) for what a value may be.
    """
    validation = {"expression": expression, "reason": reason}
    if message_expression is not None:
        validation["messageExpression"] = message_expression
    if message is not None:
        validation["message"] = message
    return validation


def _rules(
    resources: str | list[str],
    operations: list[str],
    *,
    group: str = API_GROUP,
    version: str = API_VERSION,
) -> dict[str, Any]:
    return {
        "resourceRules": [
            {
                "apiGroups": [group],
                "apiVersions": [version],
                "operations": operations,
                "resources": [resources] if isinstance(resources, str) else resources,
            }
        ]
    }


def _policy(
    name: str,
    match_constraints: dict[str, Any],
    *,
    validations: list[dict[str, str]],
    variables: dict[str, str] | None = None,
    match_conditions: list[dict[str, str]] | None = None,
    param_kind: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"failurePolicy": "Fail"}
    if param_kind is not None:
        spec["paramKind"] = param_kind
    spec["matchConstraints"] = match_constraints
    if match_conditions is not None:
        spec["matchConditions"] = match_conditions
    if variables is not None:
        spec["variables"] = [{"name": k, "expression": v} for k, v in variables.items()]
    spec["validations"] = validations
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": dict(PART_OF_LABEL)},
        "spec": spec,
    }


def policy_binding(
    policy: dict[str, Any],
    *,
    param_name: str | None = None,
    param_namespace: str | None = None,
    in_project_namespaces: bool = False,
) -> dict[str, Any]:
    """The Deny binding of `policy`, named like it.

    A policy with a parameter kind gets every object of that kind as parameter (the rule runs
    once per object; none at all is fine), or with `param_name` the one of that name in the
    request's own namespace (or `param_namespace`, for a cluster-scoped object), where "not
    found" means Deny: a namespace without it admits nothing. `in_project_namespaces` limits
    the binding to project namespaces (the platform's own namespaces are not)."""
    name = policy["metadata"]["name"]
    spec: dict[str, Any] = {"policyName": name, "validationActions": ["Deny"]}
    if param_name is not None:
        spec["paramRef"] = {"name": param_name, "parameterNotFoundAction": "Deny"}
        if param_namespace is not None:
            spec["paramRef"]["namespace"] = param_namespace
    elif "paramKind" in policy["spec"]:
        spec["paramRef"] = {"selector": {}, "parameterNotFoundAction": "Allow"}
    if in_project_namespaces:
        spec["matchResources"] = _PROJECT_NAMESPACES
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": dict(PART_OF_LABEL)},
        "spec": spec,
    }
