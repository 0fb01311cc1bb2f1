"""Every name, label and annotation key the planner gives to Kubernetes objects.

Guarantees (each one has a row in tests/unit/test_names.py):

1. Valid for the kind. Every object name is a DNS-1123 label: 1-63 characters of a-z, 0-9
   and '-', starting and ending with a letter or digit. That is what a Namespace and a pod
   volume require, and stricter than the DNS-1123 subdomain that PVs, PVCs, policies and
   bindings require. It also makes each name usable as a label value, which the Mountpoint S3
   CSI driver does with PV names (`s3.csi.aws.com/volume-name=<pv>`).
2. No collisions. Names inside a project namespace only need to be unique there, and each
   kind has its own prefix. Cluster-scoped names encode the project (Namespace) or the
   (project, dataset) pair (PersistentVolume), so two different pairs never share a name.
3. Readable when possible, hashed when needed. A PV name that would be longer than 63
   characters, or whose parts contain '--' (so it could be split in two ways), is cut and ends
   in '---' plus 16 hex digits of the sha256 of its parts. Readable names never contain '---',
   so a readable name never equals a hashed one. 16 hex digits (64 bits) because requesters
   choose project slugs: a 32-bit suffix could be brute-forced to hit another project's PV.
4. Inputs are checked against the domain patterns of `provisioner.models.rules`, so the
   guarantees hold even for a caller that did not go through the models; a bad input raises
   ValueError with the validator's message.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from provisioner import API_GROUP
from provisioner.models.rules import validate_dataset_name, validate_project_slug

if TYPE_CHECKING:  # read only: importing pydantic-settings costs every `tre` query 40 ms
    from provisioner.models.settings import Settings

# --- Labels and annotations ------------------------------------------------------------------

LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "ucloud-tre"
LABEL_PROJECT: Final = f"{API_GROUP}/project"
LABEL_DATASET: Final = f"{API_GROUP}/dataset"
# The dataset manifest hash that was approved; the mounted data must still match it.
# The controller's finalizer on every AccessRequest and ExportRequest: such an object is
# deleted only once every record of it is in the audit log (planning/project.py), and only
# the controller sets or lifts it (admission policy tre-resource-metadata).
AUDITED_FINALIZER: Final = f"{API_GROUP}/audited"
ANNOTATION_MANIFEST: Final = f"{API_GROUP}/manifest-sha256"
# One field manager for every server-side apply, so fields we stop declaring are removed.
FIELD_MANAGER: Final = "ucloud-tre"
# On a notebook pod: the JupyterHub user it was started for (set by the hub; labels cannot
# hold every username). Admission and the controller compare it with the members.
ANNOTATION_USER: Final = f"{API_GROUP}/user"
# On `tre check --probe-from-pods`'s pods (planning/runtime_probes.py): their role (listen or
# probe), the run they belong to, and the admin who ran it (the controller's audit records it).
LABEL_CHECK_PROBE: Final = f"{API_GROUP}/check-probe"
LABEL_CHECK_RUN: Final = f"{API_GROUP}/check-run"
ANNOTATION_CHECK_PROBE_BY: Final = f"{API_GROUP}/check-probe-by"

# --- Platform namespace -------------------------------------------------------------------------

# Where the controller, its ServiceAccount and Lease, and the airlock live.
SYSTEM_NAMESPACE: Final = "tre-system"
# The ConfigMap in SYSTEM_NAMESPACE holding the audit chain head and the controller's public
# key; only the controller may write it (planning/audit_anchor.py).
AUDIT_HEAD_CONFIGMAP: Final = "tre-audit-head"
# The ConfigMap in SYSTEM_NAMESPACE listing every access request awaiting a decision (key: its
# name, value: its requester), written only by the controller: the parameter of the policy
# that limits how many one person may have open (admission.py `tre-open-requests-limit`).
OPEN_REQUESTS_CONFIGMAP: Final = "tre-open-requests"
# The Secret in SYSTEM_NAMESPACE that the k8s-csi-s3 node plugin reads at NodeStage: the S3
# endpoint and region only, never credentials (planning/storage.py says why it exists).
DATASET_S3_SECRET: Final = "tre-dataset-s3"  # noqa: S105 -- a name; it holds no credentials

# --- Fixed names inside a project namespace ---------------------------------------------------

RESOURCE_QUOTA_NAME: Final = "tre-compute"
LIMIT_RANGE_NAME: Final = "tre-compute-defaults"
DEFAULT_SERVICE_ACCOUNT_NAME: Final = "default"
# The RoleBinding and the ClusterRole it binds (shipped by the Helm chart) share one name.
HUB_ROLE_BINDING_NAME: Final = "tre-hub-spawner"
HUB_CLUSTER_ROLE_NAME: Final = "tre-hub-spawner"
# Members of a Ready workspace file ExportRequests in its namespace (RoleBinding of this role).
EXPORT_AUTHOR_ROLE_NAME: Final = "tre-export-author"
POLICY_DEFAULT_DENY: Final = "default-deny-all"
POLICY_ALLOW_DNS: Final = "allow-dns"
POLICY_ALLOW_HUB_API: Final = "allow-notebook-to-hub-api"
POLICY_ALLOW_AIRLOCK: Final = "allow-notebook-to-airlock"
POLICY_ALLOW_FROM_HUB_PROXY: Final = "allow-hub-proxy-to-notebook"
PROJECT_VOLUME_NAME: Final = "project"
# Per project namespace, written only by the controller: what admission needs to judge a pod
# (phase, members, claims). The pod admission policy reads it as its parameter.
WORKSPACE_ACCESS_NAME: Final = "tre-workspace-access"

# Services notebooks reach by name: the hub's as zero-to-jupyterhub names it, the airlock's as
# our chart does. Notebooks run in other namespaces, where a short name like `hub` does not
# resolve (z2jh #1916), so they use the fully qualified name.
CLUSTER_DOMAIN: Final = "cluster.local"
HUB_SERVICE: Final = "hub"
AIRLOCK_SERVICE: Final = "tre-airlock"
# ServiceAccounts of the hub's proxy (in the hub's namespace) and of the platform's resolver
# (in the resolver's namespace): neither calls the API server (no token is mounted), but each
# has an identity of its own, so admission can tie the pod labels the project NetworkPolicies
# trust to it (planning/network_policies.py `platform_peers`).
PROXY_SERVICE_ACCOUNT: Final = "tre-proxy"
DNS_SERVICE_ACCOUNT: Final = "tre-dns"


# The airlock is the JupyterHub service of this name: the hub's proxy serves it under
# /services/airlock/, and its OAuth client is service-airlock.
AIRLOCK_HUB_SERVICE: Final = "airlock"
AIRLOCK_PREFIX: Final = f"/services/{AIRLOCK_HUB_SERVICE}/"
# The user extra (key, value) the airlock asserts whenever it acts as a person. Only its
# constrained impersonation may set it (rbac.py); the export policies admit a person's change
# of an ExportRequest only with it (admission.py), so people change exports, and see them,
# only through the airlock's rules.
AIRLOCK_VIA_EXTRA: Final = "tre.ucloud.org/via"
AIRLOCK_VIA_VALUE: Final = "airlock"
# The user extra the airlock adds when a notebook's token made the call: the notebook's
# project. The export policies then admit no export of another project and no review from
# it, whatever the airlock's own checks (hub_sign_in.notebook_project) decided.
AIRLOCK_WORKSPACE_EXTRA: Final = "tre.ucloud.org/workspace"


def airlock_url(settings: Settings) -> str:
    """Where notebooks call the airlock's API: `settings.airlock_url`, else its Service."""
    if settings.airlock_url:
        return settings.airlock_url.rstrip("/") + "/"
    host = service_fqdn(AIRLOCK_SERVICE, settings.airlock_namespace)
    return f"http://{host}:{settings.airlock_port}{AIRLOCK_PREFIX}"


def service_fqdn(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.svc.{CLUSTER_DOMAIN}"


MAX_NAME_LENGTH: Final = 63
DNS1123_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

_NAMESPACE_PREFIX = "tre-"
_DATASET_PREFIX = "ds-"
_PV_PREFIX = "tre-"
_PART_SEPARATOR = "--"
_HASH_SEPARATOR = "---"
_HASH_LENGTH = 16


def is_dns1123_label(value: str) -> bool:
    return len(value) <= MAX_NAME_LENGTH and re.fullmatch(DNS1123_LABEL_PATTERN, value) is not None


NAMESPACE_PREFIX: Final = _NAMESPACE_PREFIX


def namespace_name(project: str) -> str:
    """`tre-<project>`: at most 36 characters, since a slug has at most 32."""
    return _NAMESPACE_PREFIX + validate_project_slug(project)


def dataset_pv_name(project: str, dataset: str) -> str:
    """The cluster-wide PersistentVolume of one dataset in one project.

    `tre-<project>--<dataset>` when that is unambiguous and fits, otherwise hashed (guarantee 3).
    """
    return _readable_or_hashed(
        _PV_PREFIX, (validate_project_slug(project), validate_dataset_name(dataset))
    )


def dataset_pvc_name(dataset: str) -> str:
    """`ds-<dataset>`: unique within the namespace, which belongs to one project."""
    return _DATASET_PREFIX + validate_dataset_name(dataset)


def dataset_volume_name(dataset: str) -> str:
    """The pod volume of a dataset; `ds-` keeps it apart from `project`."""
    return _DATASET_PREFIX + validate_dataset_name(dataset)


def project_pvc_name() -> str:
    return "project-storage"


def owned_labels(project: str) -> dict[str, str]:
    """Labels on every object we plan, so the controller can list and prune what it owns."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PROJECT: validate_project_slug(project)}


def owned_selector(project: str) -> str:
    """`owned_labels` as a label selector string for list and watch calls."""
    return ",".join(f"{key}={value}" for key, value in owned_labels(project).items())


def object_metadata(
    name: str,
    project: str,
    *,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`metadata` with the owned labels; absent parts are left out rather than set to None."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = {**owned_labels(project), **(labels or {})}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return metadata


def platform_namespaces(settings: Settings) -> frozenset[str]:
    """Namespaces no project may get: the controller's (and its Lease's), the hub's, the
    airlock's, and the one of the controller's ServiceAccount if that is elsewhere."""
    account = service_account_of(settings.controller_user)
    found = {SYSTEM_NAMESPACE, settings.hub_namespace, settings.airlock_namespace}
    if account is not None:
        found.add(account[0])
    return frozenset(found)


def project_of_namespace(namespace: str, settings: Settings) -> str | None:
    """The project whose namespace `namespace` is (`tre-<slug>`, not a platform namespace),
    or None."""
    slug = namespace.removeprefix(_NAMESPACE_PREFIX)
    if slug == namespace or namespace in platform_namespaces(settings):
        return None
    try:
        return validate_project_slug(slug)
    except ValueError:
        return None


def reserved_project_slugs(settings: Settings) -> list[str]:
    """Slugs whose namespace `tre-<slug>` would be a platform namespace."""
    return sorted(
        ns[len(_NAMESPACE_PREFIX) :]
        for ns in platform_namespaces(settings)
        if ns.startswith(_NAMESPACE_PREFIX)
    )


def hub_user(settings: Settings) -> str:
    """The Kubernetes user name of the hub's ServiceAccount: who starts notebook pods."""
    return f"system:serviceaccount:{settings.hub_namespace}:{settings.hub_service_account}"


def service_account_of(username: str) -> tuple[str, str] | None:
    """(namespace, name) when `username` is a ServiceAccount's (system:serviceaccount:NS:NAME),
    else None: the form the API server gives a ServiceAccount token's identity."""
    parts = username.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return parts[2], parts[3]
    return None


def _readable_or_hashed(prefix: str, parts: tuple[str, ...]) -> str:
    readable = prefix + _PART_SEPARATOR.join(parts)
    # Parts never start or end with '-', so without '--' inside a part the separator is the
    # only '--' and the readable name splits back into its parts in exactly one way.
    if len(readable) <= MAX_NAME_LENGTH and not any(_PART_SEPARATOR in part for part in parts):
        return readable
    # '/' cannot occur in a part, so the hashed text is unambiguous as well.
    import hashlib  # here: the `tre` queries import this module for FIELD_MANAGER only

    digest = hashlib.sha256("/".join((prefix, *parts)).encode()).hexdigest()[:_HASH_LENGTH]
    keep = MAX_NAME_LENGTH - len(_HASH_SEPARATOR) - _HASH_LENGTH
    return f"{readable[:keep]}{_HASH_SEPARATOR}{digest}"


# What a person may read of one project's AccessRequests and Workspace (planning/read_grants.py):
# a ClusterRole and its ClusterRoleBinding per (project, person), both of this name. The
# controller's credential may write no ClusterRole or ClusterRoleBinding named otherwise
# (admission policies `tre-controller-read-grants` and `-read-grant-bindings`).
READ_GRANT_PREFIX: Final = "tre-reads-"
# On each read grant: the person it is for (a label cannot hold every username).
ANNOTATION_READER: Final = f"{API_GROUP}/reader"


def read_grant_name(project: str, person: str) -> str:
    """`tre-reads-<project>--<16 hex digits of the person's sha256>`: at most 60 characters,
    and two people never share a grant (64 bits, as for hashed PV names)."""
    import hashlib  # here: the `tre` queries import this module for FIELD_MANAGER only

    digest = hashlib.sha256(person.encode()).hexdigest()[:_HASH_LENGTH]
    return f"{READ_GRANT_PREFIX}{validate_project_slug(project)}{_PART_SEPARATOR}{digest}"
