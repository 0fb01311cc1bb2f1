"""Install the platform's cluster-wide objects: CRDs, admission policies, RBAC, tre-system and
the controller's ServiceAccount in it (and, for the k8s-csi-s3 dataset driver, its CSIDriver
and the Secret with the S3 endpoint its node plugin reads), the hub's namespace and the
ServiceAccounts of the hub and its proxy, the airlock's namespace and ServiceAccount, the
resolver's ServiceAccount.

Idempotent (server-side apply). Waits until the CRDs are Established. The API server loads
admission policies asynchronously, a moment after they are applied: the tests probe until a
forged write is refused (tests/integration/conftest.py); an installer that opens the platform
to users right away should do the same.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Final

from provisioner import API_GROUP
from provisioner.errors import TemporaryError
from provisioner.kube.api import Kube
from provisioner.kube.resources import RESOURCES
from provisioner.models.settings import Settings
from provisioner.planning.admission import open_requests_configmap, plan_admission_policies
from provisioner.planning.audit_anchor import plan_audit_anchor
from provisioner.planning.crds import plan_crds
from provisioner.planning.names import (
    DNS_SERVICE_ACCOUNT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PROXY_SERVICE_ACCOUNT,
    SYSTEM_NAMESPACE,
    service_account_of,
)
from provisioner.planning.rbac import plan_airlock_identity, plan_platform_rbac
from provisioner.planning.storage import dataset_driver_objects

CRDS = RESOURCES[("apiextensions.k8s.io/v1", "CustomResourceDefinition")]


def plan_platform(settings: Settings) -> list[dict[str, Any]]:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": SYSTEM_NAMESPACE,
            "labels": {
                LABEL_MANAGED_BY: MANAGED_BY,
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": settings.psa_version,
            },
        },
    }
    return [
        namespace,
        *_controller_service_account(settings),
        *_hub_identity(settings),
        *plan_airlock_identity(settings),
        *_resolver_identity(settings),
        *plan_crds(),
        *plan_platform_rbac(settings),
        *plan_admission_policies(settings),
        *plan_audit_anchor(settings),
        open_requests_configmap(),
        *dataset_driver_objects(settings),
    ]


def _controller_service_account(settings: Settings) -> list[dict[str, Any]]:
    """The controller's ServiceAccount, when `controller_user` names one in tre-system.

    In a cluster the controller runs as this account; locally its token (TokenRequest) is how
    a benchmark or a test acts exactly as the controller, without impersonation.
    """
    account = service_account_of(settings.controller_user)
    if account is None or account[0] != SYSTEM_NAMESPACE:
        return []
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": account[1],
                "namespace": SYSTEM_NAMESPACE,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY},
            },
        }
    ]


def _hub_identity(settings: Settings) -> list[dict[str, Any]]:
    """The hub's namespace and ServiceAccount: the identity Ready workspaces bind (their
    RoleBinding names it), so the hub never needs more than that. zero-to-jupyterhub installs
    the hub into this namespace with this account (`hub.serviceAccount.name`); applying them
    here first lets the local hub, and a chart installed later, use the same identity.

    Pod Security `baseline` enforced (the chart's hub and proxy pods meet it), `restricted`
    warned and audited: the hub's pods hold no notebook data, but nothing there needs more.
    """
    labels = {LABEL_MANAGED_BY: MANAGED_BY}
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": settings.hub_namespace,
                "labels": {
                    **labels,
                    "pod-security.kubernetes.io/enforce": "baseline",
                    "pod-security.kubernetes.io/enforce-version": settings.psa_version,
                    "pod-security.kubernetes.io/warn": "restricted",
                    "pod-security.kubernetes.io/warn-version": settings.psa_version,
                    "pod-security.kubernetes.io/audit": "restricted",
                    "pod-security.kubernetes.io/audit-version": settings.psa_version,
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": settings.hub_service_account,
                "namespace": settings.hub_namespace,
                "labels": labels,
            },
        },
        _tokenless_service_account(PROXY_SERVICE_ACCOUNT, settings.hub_namespace),
    ]


def _resolver_identity(settings: Settings) -> list[dict[str, Any]]:
    """The resolver's ServiceAccount, in its namespace when that is one the platform makes
    (tre-system by default); elsewhere the operator makes both."""
    made = {SYSTEM_NAMESPACE, settings.hub_namespace, settings.airlock_namespace}
    if settings.dns_namespace not in made:
        return []
    return [_tokenless_service_account(DNS_SERVICE_ACCOUNT, settings.dns_namespace)]


def _tokenless_service_account(name: str, namespace: str) -> dict[str, Any]:
    """The identity of a platform pod that never calls the API server (the proxy, the
    resolver): admission ties the peer label the project NetworkPolicies trust to it
    (`tre-platform-peer-pods`); no token is mounted from it."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY},
        },
        "automountServiceAccountToken": False,
    }


def install_platform(
    kube: Kube, settings: Settings, progress: Callable[[str], None], *, timeout: float = 60.0
) -> None:
    objects = plan_platform(settings)
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    for obj in crds:
        kube.apply(obj)
    progress(f"applied {len(crds)} CustomResourceDefinitions; waiting until Established")
    deadline = time.monotonic() + timeout
    for obj in crds:
        while not _established(kube.get(CRDS, obj["metadata"]["name"])):
            if time.monotonic() > deadline:
                raise TemporaryError(
                    f"CRD {obj['metadata']['name']} not Established after {timeout:.0f}s"
                )
            time.sleep(0.2)
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    for obj in rest:
        kube.apply(obj)
    progress(f"applied {len(rest)} namespace, ServiceAccount, admission policy and RBAC objects")
    if not wait_until_exports_are_counted(kube, timeout=90.0):
        progress(
            "warning: the cluster's quota controller does not count ExportRequests yet; a "
            "workspace provisioned before it does refuses exports until its next resync "
            "(kube-controller-manager --resource-quota-sync-period, 5 min by default)"
        )


def wait_until_exports_are_counted(kube: Kube, *, timeout: float) -> bool:
    """Whether kube-controller-manager's quota controller counts ExportRequests, waiting for
    it up to `timeout`. It learns of a new kind at its next discovery (every 30 s), and a
    quota made before then stays uncounted until its full resync: the quota admission
    plugin refuses every export meanwhile ("status unknown for quota"). Each try is a fresh
    ResourceQuota in tre-system (it is counted when it is made, once the kind is known),
    deleted at once."""
    deadline = time.monotonic() + timeout
    while True:
        name = f"{EXPORT_COUNT_PROBE}-{uuid.uuid4().hex[:6]}"
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE},
                "spec": {"hard": {EXPORT_COUNT: "1"}},
            }
        )
        try:
            settle = time.monotonic() + 2
            while time.monotonic() < settle:
                quota = kube.get(QUOTAS, name, SYSTEM_NAMESPACE) or {}
                if EXPORT_COUNT in ((quota.get("status") or {}).get("used") or {}):
                    return True
                time.sleep(0.1)
        finally:
            kube.delete(QUOTAS, name, SYSTEM_NAMESPACE)
        if time.monotonic() > deadline:
            return False


EXPORT_COUNT: Final = f"count/exportrequests.{API_GROUP}"
EXPORT_COUNT_PROBE: Final = "export-count-probe"
QUOTAS = RESOURCES[("v1", "ResourceQuota")]


def _established(crd: dict[str, Any] | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
