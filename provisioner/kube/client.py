"""Kubernetes API clients: the admin's own identity, or another user through impersonation.

Impersonation is how a trusted service (the CLI run by an admin, the airlock) acts *as* a
person, exactly like ``kubectl --as``: the API server then runs RBAC and our admission policies
against that person, so four-eyes rules hold even when one credential carries the call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from provisioner.errors import InvalidInputError, PermanentError
from provisioner.kube.api import Kube
from provisioner.kube.http import HttpClient, default_kubeconfig, extra_header, load_kubeconfig
from provisioner.planning.names import service_account_of

if TYPE_CHECKING:
    from kubernetes import client

# Connections kept open to the API server per client. The library's default is 5 per CPU (10 on
# a 2-core machine); the controller holds up to 4 watches and reconciles 8 projects at once
# (controller/loop.py), and a request beyond the pool opens a fresh TLS connection each time.
CONNECTION_POOL_SIZE = 32


def _configuration() -> client.Configuration:
    from kubernetes import client  # heavy: imported only where it is used

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
    as_extra: Mapping[str, str] | None = None,
) -> client.ApiClient:
    """An ApiClient of the official library for `kubeconfig` (default: $KUBECONFIG, then
    in-cluster): the controller, the installers and the tests use it."""
    from kubernetes import client, config  # about 2 s of imports
    from kubernetes.config.config_exception import ConfigException

    if as_groups and not as_user:
        raise InvalidInputError("--as-group: needs --as USER as well")
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
    if as_groups:
        _send_groups(api, as_groups)
    for key, value in (as_extra or {}).items():
        api.set_default_header(extra_header(key), value)
    return api


def _send_groups(api: client.ApiClient, groups: tuple[str, ...]) -> None:
    """Send `Impersonate-Group` once per group on every request of `api`.

    The library keeps default headers in a dict, which holds one value per name; the API
    server reads each header line as one group, so a joined "a, b" would be one group named
    "a, b". Its REST layer hands the headers to urllib3, whose HTTPHeaderDict sends a header
    once per value: the groups are added there.
    """
    import urllib3

    rest = api.rest_client
    send = rest.request

    def request(
        method: str, url: str, query_params: Any = None, headers: Any = None, **kwargs: Any
    ) -> Any:
        merged = urllib3.HTTPHeaderDict(headers or {})
        for group in groups:
            merged.add("Impersonate-Group", group)
        return send(method, url, query_params=query_params, headers=merged, **kwargs)

    rest.request = request


def cli_client(
    kubeconfig: Path | None = None,
    *,
    as_user: str | None = None,
    as_groups: tuple[str, ...] = (),
) -> HttpClient | client.ApiClient:
    """The client of the `tre` command: the light `HttpClient` for every kubeconfig it can
    serve, else (exec plugins, auth providers, in-cluster) the official library's."""
    if as_groups and not as_user:
        raise InvalidInputError("--as-group: needs --as USER as well")
    path = kubeconfig or default_kubeconfig()
    light = load_kubeconfig(path) if path is not None else None
    if light is None:
        return api_client(kubeconfig, as_user=as_user, as_groups=as_groups)
    return light.with_impersonation(as_user, as_groups) if as_user else light


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
