"""The hub's configuration as pure functions, one per area, in the style of TLJH's configurer.

Each `update_<area>(c, settings)` only sets values on a `traitlets.config.Config`: no I/O, no
reads of the environment, nothing imported that talks to a cluster. `apply_config` calls them
all; the thin `jupyterhub_config.py` calls `apply_config`. Tests apply them to a bare
`Config()` and to a real `KubeSpawner`.

Areas:
- spawner: KubeSpawner, our pinned notebook image, JupyterLab started in /project;
- namespaces: one named server per project, spawned into that project's namespace (chosen per
  server by `hub_config.workspaces`, never from a per-user namespace template); the fallback
  namespace exists nowhere, so a server that somehow got no workspace fails closed;
- pod security: passes Pod Security Admission `restricted` (security invariant 4): non-root
  uid 1000 / gid 100, no privilege escalation, every capability dropped, RuntimeDefault
  seccomp, no ServiceAccount token, no init containers and one sidecar, the browser gate;
- browser gate (security invariant 6): the hub and the proxy reach a notebook pod only at
  its gate (images/gate, a container of its own user that the researcher cannot stop or
  change), which refuses raw files, downloads, exports and dataset reads and meters what
  reaches the browser; the Jupyter server listens on the pod's loopback only. The gate is
  added per start by the workspace's profile (`hub_config.workspaces`), with the limits of
  the workspace's tier, and `confine_pod` refuses a pod without it;
- storage: nothing provisioned by the hub; each workspace brings its volumes (read-only
  datasets, the shared /project claim) through its profile;
- labels: `component=singleuser-server` (KubeSpawner's default), which the project
  NetworkPolicies select and the controller uses to stop notebooks of a frozen workspace;
- workspaces: the profile list and the last check before a pod is created;
- offline: nothing in the notebook tries the internet by default, and users cannot override
  the image's Jupyter config from their home directory;
- dns: the platform's non-forwarding resolver is the notebook's only nameserver;
- urls: where the proxy and the hub API listen, the URL pods call the hub at, and whether the
  hub starts its proxy or talks to one started beside it;
- auth: OIDC through GenericOAuthenticator (`hub_config.oidc`: names mapped by
  `hub_config.identity`, groups refreshed) for deployments, or (only when asked for
  explicitly, and never beside any OIDC setting) a shared-password development sign-in;
- culler: jupyterhub-idle-culler as a hub-managed service with the four scopes it needs.

The secrets and the identity provider's endpoints that `update_auth` sets are read by the
hub's startup (`hub_config.auth_inputs`), not here, and handed in as `AuthInputs`.
"""

from __future__ import annotations

import sys
import urllib.parse
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from pydantic import SecretStr
from tornado.web import HTTPError
from traitlets.config import Config

from hub_config.workspaces import (
    WorkspaceReader,
    confine_pod,
    make_profile_list,
    read_workspaces_from_cluster,
    server_prefix,
)
from provisioner.errors import InvalidInputError
from provisioner.models.rules import USERNAME_PATTERN
from provisioner.models.settings import Settings
from provisioner.planning import names, notebook_pods
from provisioner.planning.network_policies import NOTEBOOK_POD_LABELS
from provisioner.planning.notebook_pods import hub_connect_url
from provisioner.planning.storage import NOTEBOOK_GID, NOTEBOOK_UID, PROJECT_MOUNT_PATH

SPAWNER_CLASS: Final = "kubespawner.KubeSpawner"
# The notebook image, labels, security contexts and DNS are defined once, for the hub and for
# `tre check`'s probe pods (provisioner/planning/notebook_pods.py).
NOTEBOOK_IMAGE: Final = notebook_pods.NOTEBOOK_IMAGE
GATE_IMAGE: Final = notebook_pods.GATE_IMAGE
# Not "tre-<slug>", so no project can ever own it, and the hub has no RoleBinding there.
NO_WORKSPACE_NAMESPACE: Final = "no-workspace-selected"
# Seconds. A first start pulls the image and mounts S3 datasets through the CSI driver.
START_TIMEOUT: Final = 300
# The hub-managed service that stops idle servers, and the scopes its documentation lists as
# the minimum: find servers and their activity, stop them. Not `admin:users`: it never deletes
# users (no --cull-users).
CULLER_SERVICE: Final = "idle-culler"
CULLER_SCOPES: Final = ("list:users", "read:users:activity", "read:servers", "delete:servers")
# Settings whose presence means "this deployment signs in through OIDC".
OIDC_SETTINGS: Final = (
    "hub_oidc_issuer",
    "hub_oidc_client_id",
    "hub_oidc_client_secret_file",
    "hub_oidc_callback_url",
    "hub_oidc_username_claim",
    "hub_oidc_groups_claim",
    "hub_oidc_scopes",
    "hub_oidc_allowed_group",
)
# Without these an OIDC sign-in cannot work or would admit every account of the provider.
_OIDC_REQUIRED: Final = (
    "hub_oidc_issuer",
    "hub_oidc_client_id",
    "hub_oidc_client_secret_file",
    "hub_oidc_callback_url",
    "hub_oidc_allowed_group",
)
# GenericOAuthenticator with the platform's name rule and group refresh (hub_config.oidc).
OIDC_AUTHENTICATOR: Final = "hub_config.oidc.PlatformOAuthenticator"
# JupyterHub's SharedPasswordAuthenticator refuses shorter passwords.
DEV_PASSWORD_MIN_LENGTH: Final = 8


class AuthMode(Enum):
    OIDC = "oidc"
    DEVELOPMENT = "development"


@dataclass(frozen=True)
class OidcEndpoints:
    """What the identity provider's discovery document says (hub_config.auth_inputs)."""

    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str


@dataclass(frozen=True)
class AuthInputs:
    """What `update_auth` needs beyond the settings: read from files and the identity
    provider at the hub's start (hub_config.auth_inputs), so that this module stays pure."""

    dev_password: SecretStr | None = None
    airlock_token: SecretStr | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_endpoints: OidcEndpoints | None = None
    hub_crypt_key: SecretStr | None = None


def _env_name(field: str) -> str:
    return f"TRE_{field.upper()}"


def auth_mode(settings: Settings) -> AuthMode:
    """How people sign in, or InvalidInputError naming the settings and the fix.

    Fails closed on every ambiguity: the development sign-in beside any OIDC setting (a
    deployment must never fall back to it), neither configured (JupyterHub's default would
    sign in the hub host's Unix accounts), or an incomplete OIDC configuration.
    """
    oidc_present = sorted(_env_name(f) for f in OIDC_SETTINGS if f in settings.model_fields_set)
    if settings.hub_dev_authenticator:
        if oidc_present:
            raise InvalidInputError(
                "TRE_HUB_DEV_AUTHENTICATOR: the development sign-in is refused because OIDC "
                f"settings are present ({', '.join(oidc_present)}); a deployment signs in "
                "through OIDC only: unset TRE_HUB_DEV_AUTHENTICATOR, or remove the OIDC "
                "settings on a development machine"
            )
        return AuthMode.DEVELOPMENT
    if not oidc_present:
        raise InvalidInputError(
            "no sign-in configured: set TRE_HUB_OIDC_ISSUER, TRE_HUB_OIDC_CLIENT_ID, "
            "TRE_HUB_OIDC_CLIENT_SECRET_FILE, TRE_HUB_OIDC_CALLBACK_URL and "
            "TRE_HUB_OIDC_ALLOWED_GROUP, or on a development machine "
            "TRE_HUB_DEV_AUTHENTICATOR=true with TRE_HUB_DEV_PASSWORD_FILE"
        )
    missing = [_env_name(f) for f in _OIDC_REQUIRED if getattr(settings, f) is None]
    if missing:
        raise InvalidInputError(
            f"OIDC sign-in is incomplete: set {', '.join(missing)} (the allowed group keeps "
            "out every account of the identity provider that is not in it)"
        )
    return AuthMode.OIDC


def update_spawner(c: Config, settings: Settings, *, notebook_image: str = NOTEBOOK_IMAGE) -> None:
    c.JupyterHub.spawner_class = SPAWNER_CLASS
    c.KubeSpawner.image = notebook_image
    # A pinned tag never changes, so pulling again would only add a registry round trip.
    c.KubeSpawner.image_pull_policy = "IfNotPresent"
    # Explicit, so JupyterHub's arguments (default_url) reach the server; KubeSpawner drops
    # them when it falls back to the image's CMD.
    c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
    # The port the project NetworkPolicies open from the hub and the proxy: the browser
    # gate's. The Jupyter server itself listens on the pod's loopback (update_gate).
    c.KubeSpawner.port = settings.notebook_port
    # The file browser's root is the container's root, so a researcher sees both the approved
    # data (/data/<dataset>, read-only) and the project files; it opens in /project. The root
    # shows nothing a terminal in the same notebook would not.
    c.KubeSpawner.notebook_dir = "/"
    c.KubeSpawner.default_url = f"/lab/tree{PROJECT_MOUNT_PATH}"
    # The home directory lives in the container and is lost on restart; /project is kept.
    c.KubeSpawner.working_dir = PROJECT_MOUNT_PATH
    # The hub reaches the pod by its IP; a Service would need RBAC the hub does not get.
    c.KubeSpawner.services_enabled = False
    c.KubeSpawner.start_timeout = START_TIMEOUT


def update_namespaces(c: Config, settings: Settings) -> None:
    # One named server per project, named after the project (hub_config.workspaces).
    c.JupyterHub.allow_named_servers = True
    # Per-user namespaces would need a ClusterRole; the project's namespace comes from the
    # profile, which needs only the RoleBinding the controller puts in Ready workspaces.
    c.KubeSpawner.enable_user_namespaces = False
    # Fail closed twice over: confine_pod refuses a pod outside its project, and the hub has
    # no rights here anyway. Cost: when a start is refused after the spawn form, JupyterHub's
    # clean-up stop() watches this namespace and logs a 403 next to the refusal.
    c.KubeSpawner.namespace = NO_WORKSPACE_NAMESPACE


def update_pod_security(c: Config, settings: Settings) -> None:
    # Numeric ids: with a named USER the kubelet cannot verify runAsNonRoot.
    c.KubeSpawner.uid = NOTEBOOK_UID
    c.KubeSpawner.gid = NOTEBOOK_GID
    # Volumes are group-owned by `users`, so project files stay shared among members.
    c.KubeSpawner.fs_gid = NOTEBOOK_GID
    c.KubeSpawner.supplemental_gids = []
    c.KubeSpawner.privileged = False
    c.KubeSpawner.allow_privilege_escalation = False
    c.KubeSpawner.pod_security_context = notebook_pods.pod_security_context()
    c.KubeSpawner.container_security_context = notebook_pods.container_security_context()
    # The project's default ServiceAccount, and no token: a notebook has no business with
    # the Kubernetes API, and a token there would be the user's to keep.
    c.KubeSpawner.service_account = None
    c.KubeSpawner.automount_service_account_token = False
    # No init containers; the only other container is the browser gate, which the workspace's
    # profile adds with its own, stricter security context (hub_config.workspaces).
    c.KubeSpawner.init_containers = []
    c.KubeSpawner.extra_containers = []


def update_storage(c: Config, settings: Settings) -> None:
    # The hub creates no claims: datasets and /project are the controller's, bound to the
    # workspace's approvals, and come in through the profile (hub_config.workspaces).
    c.KubeSpawner.storage_pvc_ensure = False
    # Deleting a named server must never delete a claim, whatever its name.
    c.KubeSpawner.delete_pvc = False
    c.KubeSpawner.volumes = []
    c.KubeSpawner.volume_mounts = []


def update_labels(c: Config, settings: Settings) -> None:
    # KubeSpawner's default, spelled out because the project NetworkPolicies select it and the
    # controller stops a frozen workspace's notebooks by it.
    c.KubeSpawner.component_label = NOTEBOOK_POD_LABELS["component"]
    # The server name is the project slug (KubeSpawner expands the template per pod).
    labels = notebook_pods.notebook_labels("{unescaped_servername}")
    c.KubeSpawner.extra_labels = {k: v for k, v in labels.items() if k not in NOTEBOOK_POD_LABELS}


def update_workspaces(
    c: Config,
    settings: Settings,
    *,
    workspace_reader: WorkspaceReader = read_workspaces_from_cluster,
    gate_image: str = GATE_IMAGE,
) -> None:
    # Called per server: the profile of the server's project with its browser gate, or a
    # clear refusal.
    c.KubeSpawner.profile_list = make_profile_list(
        workspace_reader,
        settings,
        forbidden_namespaces=names.platform_namespaces(settings),
        gate_image=gate_image,
    )
    c.KubeSpawner.modify_pod_hook = confine_pod


@dataclass(frozen=True)
class LoopbackServiceUrl:
    """KubeSpawner's `environment` callable for JUPYTERHUB_SERVICE_URL: where the Jupyter
    server of `spawner` listens, the pod's loopback (a value object, so two configurations
    from the same settings compare equal)."""

    settings: Settings

    def __call__(self, spawner: Any) -> str:
        return notebook_pods.notebook_service_url(self.settings, server_prefix(spawner))


def update_gate(c: Config, settings: Settings) -> None:
    # The Jupyter server binds the pod's loopback, so nothing but the gate beside it reaches
    # it. JupyterHub's server extension takes its address from JUPYTERHUB_SERVICE_URL above
    # any command-line option; `environment` is applied last, so this value wins.
    c.KubeSpawner.environment = {
        **c.KubeSpawner.environment,
        "JUPYTERHUB_SERVICE_URL": LoopbackServiceUrl(settings),
    }


def update_offline(c: Config, settings: Settings) -> None:
    # Home is writable: without this a user could override the image's Jupyter config (the
    # read-only extension manager, the disabled download commands) from ~/.jupyter.
    c.KubeSpawner.disable_user_config = True
    c.KubeSpawner.environment = {
        # Egress is closed: fail at once with a clear message instead of hanging on PyPI.
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def update_dns(c: Config, settings: Settings) -> None:
    # The platform's resolver only (notebook_pods.notebook_dns says why).
    c.KubeSpawner.extra_pod_config = notebook_pods.notebook_dns(settings)


def update_urls(c: Config, settings: Settings) -> None:
    c.JupyterHub.bind_url = settings.hub_bind_url
    c.JupyterHub.hub_bind_url = settings.hub_api_bind_url or f"http://:{settings.hub_api_port}"
    c.JupyterHub.hub_connect_url = hub_connect_url(settings)
    if settings.hub_proxy_api_url is not None:
        # A proxy started beside the hub (its own process, pod or network namespace): the hub
        # only programs its routes, with the token both read from CONFIGPROXY_AUTH_TOKEN.
        c.ConfigurableHTTPProxy.should_start = False
        c.ConfigurableHTTPProxy.api_url = settings.hub_proxy_api_url


@dataclass(frozen=True)
class AllowedGroupOnly:
    """KubeSpawner's `pre_spawn_hook` with OIDC: a start needs the allowed group among the
    person's hub groups, as the provider said right before it (`refresh_pre_spawn`). A person
    removed from the group, or whose account the provider disabled, has no groups left
    (hub_config.oidc) and so starts nothing, even with an API token that JupyterHub cannot
    send to sign in again. Membership of the workspace is still decided by the profile."""

    group: str

    def __call__(self, spawner: Any) -> None:
        if self.group not in {group.name for group in spawner.user.groups}:
            raise HTTPError(
                403,
                "%s",
                f"{spawner.user.name} is no longer in the group {self.group} that may use "
                "the platform (the identity provider says so); sign in again, or ask your "
                "administrator",
            )


def update_auth(c: Config, settings: Settings, inputs: AuthInputs) -> None:
    """Who may sign in. InvalidInputError (naming the setting) when the mode is ambiguous or
    `inputs` lacks what the mode needs, so a hub never starts with a weaker sign-in."""
    mode = auth_mode(settings)
    # The platform's one user name rule (provisioner.models.rules), in JupyterHub's own check
    # too: with OIDC behind hub_config.identity, which refuses first and says why.
    c.Authenticator.username_pattern = USERNAME_PATTERN
    if mode is AuthMode.DEVELOPMENT:
        password = inputs.dev_password
        if password is None or len(password.get_secret_value()) < DEV_PASSWORD_MIN_LENGTH:
            raise InvalidInputError(
                "TRE_HUB_DEV_PASSWORD_FILE: the development sign-in needs a shared password "
                f"of at least {DEV_PASSWORD_MIN_LENGTH} characters in this file"
            )
        c.JupyterHub.authenticator_class = "shared-password"
        c.SharedPasswordAuthenticator.user_password = password.get_secret_value()
        # Any name with the password: who may start what is decided by Workspace membership
        # (hub_config.workspaces), which refuses a name no workspace lists.
        c.SharedPasswordAuthenticator.allow_all = True
        return
    secret, endpoints = inputs.oidc_client_secret, inputs.oidc_endpoints
    crypt_key = inputs.hub_crypt_key
    if secret is None or endpoints is None or crypt_key is None:
        raise InvalidInputError(
            "OIDC sign-in: the client secret (TRE_HUB_OIDC_CLIENT_SECRET_FILE), the auth "
            "state's key (TRE_HUB_CRYPT_KEY_FILE) and the identity provider's endpoints "
            "(TRE_HUB_OIDC_ISSUER) must be read before the hub is configured"
        )
    # The platform's rules for names and for refreshed groups (hub_config.oidc).
    c.JupyterHub.authenticator_class = OIDC_AUTHENTICATOR
    # Its settings under its parent's name: traitlets applies a parent class's section to a
    # subclass, and this is the name OAuthenticator's documentation uses.
    auth = c.GenericOAuthenticator
    auth.login_service = "your institution"
    auth.client_id = settings.hub_oidc_client_id
    auth.client_secret = secret.get_secret_value()
    auth.oauth_callback_url = settings.hub_oidc_callback_url
    auth.authorize_url = endpoints.authorization_endpoint
    auth.token_url = endpoints.token_endpoint
    auth.userdata_url = endpoints.userinfo_endpoint
    auth.scope = list(settings.hub_oidc_scopes)
    auth.username_claim = settings.hub_oidc_username_claim
    # Groups come from the provider at every sign-in and again at least every
    # hub_auth_refresh_seconds and before every start (the provider's tokens are kept,
    # encrypted, in auth_state); only the allowed group gets in. Not allow_all /
    # allow_existing_users: a user removed from the group is out at the next refresh.
    auth.enable_auth_state = True
    # An item, not an attribute: `keys` is also the name of the Config's dict method.
    c.CryptKeeper["keys"] = [crypt_key.get_secret_value()]
    auth.refresh_pre_spawn = True
    auth.auth_refresh_age = settings.hub_auth_refresh_seconds
    auth.manage_groups = True
    auth.auth_state_groups_key = f"oauth_user.{settings.hub_oidc_groups_claim}"
    auth.allowed_groups = {settings.hub_oidc_allowed_group}
    auth.allow_all = False
    auth.allow_existing_users = False
    assert settings.hub_oidc_allowed_group is not None  # auth_mode checked it
    c.KubeSpawner.pre_spawn_hook = AllowedGroupOnly(settings.hub_oidc_allowed_group)


def culler_api_url(settings: Settings) -> str:
    """The hub API as the culler, a process beside the hub, reaches it: where the hub binds it,
    a wildcard host being the loopback. Not the connect URL: that is the hub's Service, and a
    pod reaching itself through its own Service needs hairpin traffic many CNIs do not pass
    (nor do the hub pod's NetworkPolicies open it)."""
    bind = urllib.parse.urlsplit(settings.hub_api_bind_url or f"http://:{settings.hub_api_port}")
    wildcard = bind.hostname in (None, "", "0.0.0.0")  # noqa: S104 - read, not bound
    host = "127.0.0.1" if wildcard else bind.hostname
    path = bind.path.rstrip("/") or "/hub"
    return f"{bind.scheme}://{host}:{bind.port or settings.hub_api_port}{path}/api"


def update_culler(c: Config, settings: Settings, *, python: str = sys.executable) -> None:
    # A hub-managed service: the hub starts it with an API token of its own and stops it.
    c.JupyterHub.services = [
        {
            "name": CULLER_SERVICE,
            "command": [
                python,
                "-m",
                "jupyterhub_idle_culler",
                f"--timeout={settings.hub_idle_timeout_seconds}",
                f"--cull-every={settings.hub_cull_every_seconds}",
                f"--url={culler_api_url(settings)}",
            ],
        }
    ]
    c.JupyterHub.load_roles = [
        {"name": CULLER_SERVICE, "scopes": list(CULLER_SCOPES), "services": [CULLER_SERVICE]}
    ]


def server_project(spawner: Any) -> str:
    """The project of a notebook server: one named server per project, named after it."""
    return str(spawner.name)


# The scopes of a notebook's own token (JupyterHub's `server` role) plus the airlock, so that
# `tre export submit` in the notebook reaches it as the notebook's user. The hub resolves
# `access:servers!server` to this server (`!server=<user>/<project>`), and that is how the
# airlock tells a notebook's token from the person's own and binds it to its project
# (provisioner/airlock/hub_sign_in.py): keep it here.
SERVER_TOKEN_SCOPES: Final = ("users:activity!user", "access:servers!server")
AIRLOCK_ACCESS: Final = f"access:services!service={names.AIRLOCK_HUB_SERVICE}"
AIRLOCK_TOKEN_MIN_LENGTH: Final = 32


def update_airlock(c: Config, settings: Settings, inputs: AuthInputs) -> None:
    """The airlock as the hub's service `airlock`: the proxy serves it under its prefix, people
    sign in to it by OAuth without a consent page (it is the platform's own), every user may
    reach it, and so may every notebook's token; notebooks learn its URL. Without a token
    (TRE_HUB_AIRLOCK_TOKEN_FILE) the hub has no airlock."""
    token = inputs.airlock_token
    if token is None:
        return
    if len(token.get_secret_value()) < AIRLOCK_TOKEN_MIN_LENGTH:
        raise InvalidInputError(
            f"TRE_HUB_AIRLOCK_TOKEN_FILE: the token is shorter than {AIRLOCK_TOKEN_MIN_LENGTH} "
            "characters; write a random one (openssl rand -hex 32)"
        )
    url = names.airlock_url(settings)
    origin = url[: url.index("/", len("http://") if url.startswith("http://") else 8)]
    c.JupyterHub.services = [
        *c.JupyterHub.services,
        {
            "name": names.AIRLOCK_HUB_SERVICE,
            "url": origin,
            "api_token": token.get_secret_value(),
            "oauth_no_confirm": True,
            "display": True,
            "info": {"description": "Export results: submit, review, release"},
        },
    ]
    c.JupyterHub.load_roles = [
        *c.JupyterHub.load_roles,
        {"name": "user", "scopes": ["self", AIRLOCK_ACCESS]},
    ]
    c.Spawner.server_token_scopes = [*SERVER_TOKEN_SCOPES, AIRLOCK_ACCESS]
    c.KubeSpawner.environment = {
        **c.KubeSpawner.environment,
        "TRE_AIRLOCK_URL": url,
        # `tre export submit`'s default project: the server is named after its project.
        "TRE_PROJECT": server_project,
    }
    if auth_mode(settings) is AuthMode.DEVELOPMENT and settings.hub_dev_groups:
        c.JupyterHub.load_groups = {
            group: {"users": sorted(users)} for group, users in settings.hub_dev_groups.items()
        }


def apply_config(
    c: Config,
    settings: Settings,
    auth: AuthInputs,
    *,
    workspace_reader: WorkspaceReader = read_workspaces_from_cluster,
    notebook_image: str = NOTEBOOK_IMAGE,
    gate_image: str = GATE_IMAGE,
    python: str = sys.executable,
) -> None:
    """Every area, in order. Only sets values on `c`."""
    update_spawner(c, settings, notebook_image=notebook_image)
    update_namespaces(c, settings)
    update_pod_security(c, settings)
    update_storage(c, settings)
    update_labels(c, settings)
    update_workspaces(c, settings, workspace_reader=workspace_reader, gate_image=gate_image)
    update_offline(c, settings)
    update_gate(c, settings)
    update_dns(c, settings)
    update_urls(c, settings)
    update_auth(c, settings, auth)
    update_culler(c, settings, python=python)
    update_airlock(c, settings, auth)
