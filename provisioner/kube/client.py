"""Kubernetes API clients: the admin's own identity, or another user through impersonation.

Impersonation is how a trusted service (the CLI run by an admin, the airlock) acts *as* a
person, exactly like ``kubectl --as``: the API server then runs RBAC and our admission policies
against that person, so four-eyes rules hold even when one credential carries the call.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from provisioner.errors import InvalidInputError, PermanentError
from provisioner.kube.api import Kube
from provisioner.planning.names import service_account_of

# Connections kept open to the API server per client. The library's default is 5 per CPU (10 on
# a 2-core machine); the controller holds up to 4 watches and reconciles 8 projects at once
# (controller/loop.py), and a request beyond the pool opens a fresh TLS connection each time.
CONNECTION_POOL_SIZE = 32


def _configuration() -> client.Configuration:
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = max(
        configuration.connection_pool_maxsize, CONNECTION_POOL_SIZE
    )
    return configuration


def api_client(
    kubeconfig: Path | None = None,
    *,
    as_user: str | None = None,
    as_groups: tuple[str, ...] = (),
) -> client.ApiClient:
    """An ApiClient for `kubeconfig` (default: $KUBECONFIG, then in-cluster)."""
    if as_groups and not as_user:
        raise InvalidInputError("--as-group: needs --as USER as well")
    if len(as_groups) > 1:
        # The Python client sends default headers as a dict, so it cannot repeat
        # Impersonate-Group; refuse rather than silently drop a group.
        raise InvalidInputError(f"--as-group: give at most one group (got {len(as_groups)})")
    if kubeconfig is None and os.environ.get("KUBECONFIG"):
        # Read now, not at import: the client library captures $KUBECONFIG when imported.
        kubeconfig = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    try:
        if kubeconfig is not None:
            api = config.new_client_from_config(
                config_file=str(kubeconfig), client_configuration=_configuration()
            )
        else:
            try:
                api = config.new_client_from_config(client_configuration=_configuration())
            except ConfigException:
                configuration = _configuration()
                config.load_incluster_config(client_configuration=configuration)
                api = client.ApiClient(configuration)
    except (ConfigException, OSError) as exc:
        raise PermanentError(
            f"cannot load Kubernetes credentials ({exc}); set KUBECONFIG, for a local "
            'platform: eval "$(tre dev env)"'
        ) from exc
    if as_user:
        api.set_default_header("Impersonate-User", as_user)
    for group in as_groups:
        api.set_default_header("Impersonate-Group", group)
    return api


def write_service_account_kubeconfig(
    admin: Kube,
    base_kubeconfig: Path,
    username: str,
    path: Path,
    *,
    expiration_seconds: int = 3600,
) -> Path:
    """Write a kubeconfig at `path` that authenticates as ServiceAccount `username`
    (system:serviceaccount:NS:NAME) with a short-lived token from the TokenRequest API.

    This is exactly the identity a pod of that account has in a cluster: no impersonation, so
    no extra authorization check per request. `admin` must be allowed to create tokens.
    """
    account = service_account_of(username)
    if account is None:
        raise InvalidInputError(
            f"{username!r} is not a ServiceAccount username; expected "
            "system:serviceaccount:NAMESPACE:NAME"
        )
    namespace, name = account
    token = admin.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        },
        what=f"token for ServiceAccount {namespace}/{name}",
    )["status"]["token"]
    base = yaml.safe_load(base_kubeconfig.read_text())
    context = base["current-context"]
    cluster = next(c["context"]["cluster"] for c in base["contexts"] if c["name"] == context)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [c for c in base["clusters"] if c["name"] == cluster],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": cluster, "user": name}}],
        "current-context": name,
    }
    # The token is a credential: the file is private from its first byte.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(yaml.safe_dump(config, sort_keys=False))
    return path
