"""The REST paths of every kind the platform writes, known up front.

A static table instead of API discovery: the controller only ever writes these kinds, and
skipping discovery saves a dozen requests at start and keeps each call a single round trip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from provisioner import API_GROUP, API_VERSION
from provisioner.errors import PermanentError


# A NamedTuple, not a dataclass: `dataclasses` imports `inspect`, about 5 ms of every
# `tre` query (docs/performance.md), and this sits on the query path.
class Resource(NamedTuple):
    api_version: str  # "v1" or "group/version"
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


_KNOWN = [
    Resource("v1", "Namespace", "namespaces", False),
    Resource("v1", "ServiceAccount", "serviceaccounts", True),
    Resource("v1", "ResourceQuota", "resourcequotas", True),
    Resource("v1", "LimitRange", "limitranges", True),
    Resource("v1", "PersistentVolume", "persistentvolumes", False),
    Resource("v1", "PersistentVolumeClaim", "persistentvolumeclaims", True),
    Resource("v1", "Pod", "pods", True),
    Resource("v1", "ConfigMap", "configmaps", True),
    Resource("v1", "Secret", "secrets", True),
    Resource("storage.k8s.io/v1", "CSIDriver", "csidrivers", False),
    Resource("storage.k8s.io/v1", "StorageClass", "storageclasses", False),
    Resource("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True),
    Resource("rbac.authorization.k8s.io/v1", "Role", "roles", True),
    Resource("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True),
    Resource("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False),
    Resource("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False),
    Resource(
        "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False
    ),
    Resource(
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        False,
    ),
    Resource(
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        False,
    ),
    Resource("coordination.k8s.io/v1", "Lease", "leases", True),
    # the dev node's cluster DNS (devcluster/cluster_dns.py); `tre check`'s hub sign-in check
    Resource("apps/v1", "Deployment", "deployments", True),
    # `tre check`: the API server's own addresses, and access reviews of other identities
    Resource("v1", "Service", "services", True),
    Resource("discovery.k8s.io/v1", "EndpointSlice", "endpointslices", True),
    # `tre check --probe-from-pods`: which nodes are Ready, and their kubelets' addresses
    Resource("v1", "Node", "nodes", False),
    Resource("authorization.k8s.io/v1", "SubjectAccessReview", "subjectaccessreviews", False),
    Resource(f"{API_GROUP}/{API_VERSION}", "Dataset", "datasets", False),
    Resource(f"{API_GROUP}/{API_VERSION}", "AccessRequest", "accessrequests", False),
    Resource(f"{API_GROUP}/{API_VERSION}", "Workspace", "workspaces", False),
    Resource(f"{API_GROUP}/{API_VERSION}", "ExportRequest", "exportrequests", True),
    Resource(f"{API_GROUP}/{API_VERSION}", "BrowserActivity", "browseractivities", True),
]
RESOURCES: dict[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in _KNOWN}

DATASETS = RESOURCES[(f"{API_GROUP}/{API_VERSION}", "Dataset")]
ACCESS_REQUESTS = RESOURCES[(f"{API_GROUP}/{API_VERSION}", "AccessRequest")]
WORKSPACES = RESOURCES[(f"{API_GROUP}/{API_VERSION}", "Workspace")]
EXPORT_REQUESTS = RESOURCES[(f"{API_GROUP}/{API_VERSION}", "ExportRequest")]
BROWSER_ACTIVITIES = RESOURCES[(f"{API_GROUP}/{API_VERSION}", "BrowserActivity")]

# Kinds a workspace owns, in the order they are pruned (planning.workspace.PRUNE_ORDER).
# Computed on first use (PEP 562): importing the planner costs every `tre` command about
# 0.1 s, and only the controller needs this list.
if TYPE_CHECKING:
    OWNED_KINDS: list[Resource]
else:

    def __getattr__(name: str) -> Any:
        if name != "OWNED_KINDS":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from provisioner.planning.workspace import PRUNE_ORDER

        kinds = [next(r for r in _KNOWN if r.kind == kind) for kind in PRUNE_ORDER]
        globals()["OWNED_KINDS"] = kinds
        return kinds


PODS = RESOURCES[("v1", "Pod")]
NAMESPACES = RESOURCES[("v1", "Namespace")]
NETWORK_POLICIES = RESOURCES[("networking.k8s.io/v1", "NetworkPolicy")]
ROLE_BINDINGS = RESOURCES[("rbac.authorization.k8s.io/v1", "RoleBinding")]
CONFIG_MAPS = RESOURCES[("v1", "ConfigMap")]
ENDPOINT_SLICES = RESOURCES[("discovery.k8s.io/v1", "EndpointSlice")]
SERVICES = RESOURCES[("v1", "Service")]
DEPLOYMENTS = RESOURCES[("apps/v1", "Deployment")]
NODES = RESOURCES[("v1", "Node")]
CLUSTER_ROLES = RESOURCES[("rbac.authorization.k8s.io/v1", "ClusterRole")]
CLUSTER_ROLE_BINDINGS = RESOURCES[("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")]


def resource_for(manifest: dict[str, object]) -> Resource:
    key = (str(manifest.get("apiVersion")), str(manifest.get("kind")))
    try:
        return RESOURCES[key]
    except KeyError:
        raise PermanentError(
            f"unknown kind {key[1]} ({key[0]}): add it to kube/resources.py"
        ) from None
