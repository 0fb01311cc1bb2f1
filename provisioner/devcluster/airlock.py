"""The airlock's own credential on the local platform.

    <state>/airlock/kubeconfig   a TokenRequest token of the airlock's ServiceAccount, 0600

The airlock acts as its ServiceAccount (`settings.airlock_user`), never as the admin: exactly
the identity its pod has in a cluster, so what the local service may do is what `tre install`
grants it there (planning/rbac.py: read exports and what they concern, write its own status
records, impersonate people only to file, review and withdraw exports).
"""

from __future__ import annotations

from pathlib import Path

from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.hub import TOKEN_SECONDS
from provisioner.errors import InvalidInputError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client, write_service_account_kubeconfig
from provisioner.models.settings import Settings
from provisioner.planning.names import service_account_of
from provisioner.planning.rbac import plan_airlock_identity


def airlock_kubeconfig(cluster: DevCluster, settings: Settings) -> Path:
    """Ensure the airlock's namespace and ServiceAccount, and write `<state>/airlock/kubeconfig`
    (0600) with a fresh token of that account, valid as long as the dev hub's (7 days).

    Idempotent: the namespace and account are applied (server-side), the token is new on every
    call. The account's rights come from `tre install` (its ClusterRole and binding); this only
    makes the identity, so a kubeconfig written before the install works once it has run.
    """
    account = service_account_of(settings.airlock_user)
    if account is None or account[0] != settings.airlock_namespace:
        raise InvalidInputError(
            f"airlock_user: {settings.airlock_user!r} is not a ServiceAccount in "
            f"airlock_namespace {settings.airlock_namespace!r}; the local airlock needs one "
            f"(set TRE_AIRLOCK_USER=system:serviceaccount:{settings.airlock_namespace}:"
            "tre-airlock)"
        )
    admin = Kube(api_client(cluster.kubeconfig))
    for manifest in plan_airlock_identity(settings):
        admin.apply(manifest)
    directory = cluster.state_dir / "airlock"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return write_service_account_kubeconfig(
        admin,
        cluster.kubeconfig,
        settings.airlock_user,
        directory / "kubeconfig",
        expiration_seconds=TOKEN_SECONDS,
    )
