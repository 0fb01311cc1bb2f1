"""The whole desired state of one project namespace, as manifests for server-side apply.

The list is in apply order. The Namespace comes first because everything else lives in it.
The deny-all NetworkPolicy comes next, so no pod can ever run unisolated (security invariant
1). The hub RoleBinding comes last: it is what lets the hub start notebooks here, so
everything that confines a notebook exists before it does. Everything carries the owned labels,
so the controller prunes any object it owns that a later plan no longer contains (for example
the RoleBinding and dataset volumes when a workspace is frozen).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from provisioner.errors import InvalidInputError
from provisioner.models.resources import Workspace, WorkspacePhase
from provisioner.models.settings import Settings
from provisioner.planning import names
from provisioner.planning.approvals import acting_lead, project_people
from provisioner.planning.exports import export_reviewers
from provisioner.planning.network_policies import network_policies
from provisioner.planning.storage import (
    dataset_claim,
    dataset_persistent_volume,
    project_storage_claim,
    workspace_datasets,
)
from provisioner.planning.tiers import limit_range, resource_quota

PSA_LEVEL: Final = "restricted"
# Kinds a workspace owns, in the order they are pruned: what grants access goes first (the
# hub's RoleBinding, then the dataset claims and volumes), the namespace last.
PRUNE_ORDER: Final = (
    "RoleBinding",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "ConfigMap",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "ServiceAccount",
    "Namespace",
)
PSA_MODES: Final = ("enforce", "audit", "warn")


def plan_workspace(workspace: Workspace, settings: Settings) -> list[dict[str, Any]]:
    """Everything a Provisioning or Ready workspace needs, in apply order."""
    project = _checked_project(workspace, settings)
    datasets = workspace_datasets(workspace)
    dataset_volumes = [
        manifest
        for dataset in datasets
        for manifest in (
            dataset_persistent_volume(project, dataset, settings),
            dataset_claim(project, dataset),
        )
    ]
    claims = [*(names.dataset_pvc_name(d.name) for d in datasets), names.project_pvc_name()]
    return [
        *_confinement(workspace, settings, planned_claims=len(datasets) + 1),
        workspace_access(workspace, WorkspacePhase.READY, claims, settings),
        *dataset_volumes,
        project_storage_claim(project, settings),
        export_authors_binding(workspace),
        hub_role_binding(project, settings),
    ]


def plan_frozen_workspace(workspace: Workspace, settings: Settings) -> list[dict[str, Any]]:
    """What a Frozen workspace keeps: its confinement and its outputs, but no hub access and
    no dataset volumes."""
    project = _checked_project(workspace, settings)
    return [
        *_confinement(workspace, settings, planned_claims=1),
        workspace_access(workspace, WorkspacePhase.FROZEN, [], settings),
        project_storage_claim(project, settings),
    ]


def plan_for_phase(
    workspace: Workspace, phase: WorkspacePhase, settings: Settings
) -> list[dict[str, Any]]:
    """The objects a workspace in `phase` should have: all of them when Ready, the
    confinement of a Frozen one, nothing otherwise."""
    if phase is WorkspacePhase.READY:
        return plan_workspace(workspace, settings)
    if phase is WorkspacePhase.FROZEN:
        return plan_frozen_workspace(workspace, settings)
    return []


def workspace_access(
    workspace: Workspace, phase: WorkspacePhase, claims: list[str], settings: Settings
) -> dict[str, Any]:
    """What the pod and export admission policies need to judge a write in this namespace.

    Only the controller may write it (admission policy), and a namespace without it admits no
    pod. `phase` other than Ready admits no pod either, so freezing a workspace stops new
    pods at once, whatever the hub's RBAC cache still allows; nor any review or release.
    `people` (everyone who has been the project's, never shrinking) and `exportReviewers`
    (the most the data ever asked) stay while Frozen, so no former member reviews and the
    floor holds (review 3, S8); `lead` is whoever holds the lead's powers now, '' for nobody
    (S9). Lists are comma-separated: usernames and claim names cannot contain a comma.
    """
    spec = workspace.spec
    members = spec.members if phase is WorkspacePhase.READY else []
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": names.object_metadata(
            names.WORKSPACE_ACCESS_NAME,
            workspace.spec.project,
            namespace=names.namespace_name(workspace.spec.project),
        ),
        "data": {
            "phase": phase.value,
            "members": ",".join(sorted(members)),
            "people": ",".join(sorted(project_people(spec))),
            "lead": acting_lead(spec, phase) or "",
            "claims": ",".join(sorted(claims)),
            # distinct output checkers an ExportRequest here needs before it is Approved
            "exportReviewers": str(export_reviewers(spec, settings.export_reviewers_by_tier)),
        },
    }


def workspace_claims(desired: Sequence[dict[str, Any]]) -> set[str]:
    """The claims pods may mount, as the planned access object says (empty when frozen)."""
    for manifest in desired:
        if manifest["kind"] == "ConfigMap" and manifest["metadata"]["name"] == (
            names.WORKSPACE_ACCESS_NAME
        ):
            return {c for c in manifest["data"]["claims"].split(",") if c}
    return set()


def namespace(project: str, settings: Settings) -> dict[str, Any]:
    """The project namespace; Pod Security Admission rejects any pod that is not `restricted`.

    The version is pinned so a cluster upgrade cannot change what `restricted` means here.
    """
    psa_labels: dict[str, str] = {}
    for mode in PSA_MODES:
        psa_labels[f"pod-security.kubernetes.io/{mode}"] = PSA_LEVEL
        psa_labels[f"pod-security.kubernetes.io/{mode}-version"] = settings.psa_version
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": names.object_metadata(
            names.namespace_name(project), project, labels=psa_labels
        ),
    }


def default_service_account(project: str) -> dict[str, Any]:
    """The `default` ServiceAccount, which notebook pods use, with no API token mounted."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": names.object_metadata(
            names.DEFAULT_SERVICE_ACCOUNT_NAME, project, namespace=names.namespace_name(project)
        ),
        "automountServiceAccountToken": False,
    }


def export_authors_binding(workspace: Workspace) -> dict[str, Any]:
    """Lets the workspace's members file ExportRequests here (admission then checks each one:
    in their own name, while the workspace is Ready)."""
    project = workspace.spec.project
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": names.object_metadata(
            names.EXPORT_AUTHOR_ROLE_NAME, project, namespace=names.namespace_name(project)
        ),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": names.EXPORT_AUTHOR_ROLE_NAME,
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": member}
            for member in sorted(workspace.spec.members)
        ],
    }


def hub_role_binding(project: str, settings: Settings) -> dict[str, Any]:
    """Lets the hub's ServiceAccount spawn notebooks in this namespace and nowhere else.

    A RoleBinding grants a ClusterRole's rules only inside its own namespace.
    """
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": names.object_metadata(
            names.HUB_ROLE_BINDING_NAME, project, namespace=names.namespace_name(project)
        ),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": names.HUB_CLUSTER_ROLE_NAME,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": settings.hub_service_account,
                "namespace": settings.hub_namespace,
            }
        ],
    }


def _confinement(
    workspace: Workspace, settings: Settings, *, planned_claims: int
) -> list[dict[str, Any]]:
    """The objects that isolate and limit a namespace, shared by every phase."""
    project = workspace.spec.project
    return [
        namespace(project, settings),
        *network_policies(project, settings),
        resource_quota(
            project,
            workspace.spec.compute_tier,
            planned_claims,
            max_exports=settings.max_export_requests,
        ),
        limit_range(project, workspace.spec.compute_tier),
        default_service_account(project),
    ]


def _checked_project(workspace: Workspace, settings: Settings) -> str:
    """The project slug, after refusing a workspace that would plan into the wrong namespace.

    The namespace is derived from the slug, never taken from the Workspace, so an edited
    `spec.namespace` cannot point the hub's RoleBinding at another namespace.
    """
    project = workspace.spec.project
    expected = names.namespace_name(project)
    if workspace.name != project:
        raise InvalidInputError(
            f"workspace {workspace.name}: spec.project must equal the Workspace name "
            f"(got {project!r}); recreate the Workspace under the project's name"
        )
    if workspace.spec.namespace != expected:
        raise InvalidInputError(
            f"workspace {workspace.name}: spec.namespace must be {expected!r} "
            f"(got {workspace.spec.namespace!r}); the namespace is derived from spec.project"
        )
    if expected in names.platform_namespaces(settings):
        raise InvalidInputError(
            f"workspace {workspace.name}: namespace {expected!r} is a platform namespace "
            "(tre-system, settings.hub_namespace, settings.airlock_namespace); choose another "
            "project slug"
        )
    return project
