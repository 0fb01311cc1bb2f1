"""JupyterHub on the local platform: the hub (KubeSpawner, `hub_config/`) and its proxy
(configurable-http-proxy), as two recorded processes of the platform.

    <state>/hub/kubeconfig      the hub's ServiceAccount token (TokenRequest), 0600
    <state>/hub/dev-password    the development sign-in's shared password, 0600
    <state>/hub/proxy-token     the token the hub and the proxy share, 0600
    <state>/hub/hub.json        where they listen (the URLs `tre dev env` prints)
    <state>/hub/hub.log, proxy.log, jupyterhub.sqlite, jupyterhub_cookie_secret
    <state>/hub/airlock-token   the token the hub and the airlock service share, 0600
    <state>/hub/airlock-cookie-secret, airlock.log   the airlock service's

The airlock service (`tre airlock serve`) is the hub's service `airlock`: a third recorded
process, started after the hub (it asks the hub who people are), where the hub is, on
`settings.airlock_port` in a node's network (the port the project NetworkPolicies open to
notebooks), and served to people by the proxy under /services/airlock/.

We start the proxy ourselves rather than letting JupyterHub start it: both pids go into the
platform's processes.json, so `tre dev down` stops a proxy even after the hub died (a proxy
the hub started would be orphaned by a hub that crashed), each has its own log, and where each
runs is one argv prefix (`HubLaunch.argv_prefix`, e.g. `nsenter -t PID -n --` to run them in
a node's network namespace), the same for both.

The hub acts as the platform's hub ServiceAccount, never as the admin: `tre install` makes
that account, and the controller binds it into Ready workspaces only, so this hub can start a
pod exactly where a hub in a cluster could.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from provisioner.devcluster.cluster import DevCluster, Progress
from provisioner.devcluster.processes import (
    Process,
    free_port,
    spawn,
    stop_with_children,
    wait_until_ready,
)
from provisioner.devcluster.s3server import AirlockScope, airlock_credentials
from provisioner.errors import DevClusterError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client, write_service_account_kubeconfig
from provisioner.kube.resources import RESOURCES
from provisioner.models.settings import Settings
from provisioner.planning.names import AIRLOCK_HUB_SERVICE, AIRLOCK_PREFIX, hub_user

if TYPE_CHECKING:
    import requests

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
HUB_CONFIG_FILE: Final = REPO_ROOT / "hub_config" / "jupyterhub_config.py"
# Installed by `make proxy` (npm ci from package-lock.json).
PROXY_SCRIPT: Final = (
    REPO_ROOT / "node_modules" / "configurable-http-proxy" / "bin" / ("configurable-http-proxy")
)
HUB_PROCESS: Final = "jupyterhub"
PROXY_PROCESS: Final = "configurable-http-proxy"
AIRLOCK_PROCESS: Final = "tre-airlock"
# The development sign-in's output checkers (hub group settings.output_checker_group), unless
# TRE_HUB_DEV_GROUPS says otherwise: the demo's two independent reviewers.
DEV_OUTPUT_CHECKERS: Final = ("olga.checker", "omar.checker")
# Seconds. A cold hub imports JupyterHub, KubeSpawner and the Kubernetes clients (~5 s here)
# and creates its database.
START_TIMEOUT: Final = 90.0
# Seconds. The hub's token lives this long; `tre dev up` on a running platform mints a new
# one only when it starts the hub again. Long enough for a working week on a dev machine.
TOKEN_SECONDS: Final = 7 * 24 * 3600
# Settings the hub must not inherit from the shell that starts it: it has no business with
# S3 or with the controller's audit signing key.
_NOT_FOR_THE_HUB: Final = (
    "TRE_S3_ACCESS_KEY_ID",
    "TRE_S3_SECRET_ACCESS_KEY",
    "TRE_AUDIT_SIGNING_KEY_FILE",
)
# Nor the airlock: it signs no audit entries (the controller derives them from its records).
_NOT_FOR_THE_AIRLOCK: Final = ("TRE_AUDIT_SIGNING_KEY_FILE",)
SERVICE_ACCOUNTS = RESOURCES[("v1", "ServiceAccount")]


def airlock_service_env(hub_api_url: str, airlock_url: str) -> dict[str, str]:
    """What the hub gives a service it manages (JupyterHub's Service.env), for the airlock
    run beside the hub: here, and in a cluster (the Helm chart's airlock Deployment). The API
    token comes on its own, from a secret file."""
    return {
        "TRE_AIRLOCK_URL": airlock_url,
        "JUPYTERHUB_SERVICE_NAME": AIRLOCK_HUB_SERVICE,
        "JUPYTERHUB_CLIENT_ID": f"service-{AIRLOCK_HUB_SERVICE}",
        "JUPYTERHUB_API_URL": f"{hub_api_url}/hub/api",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_SERVICE_PREFIX": AIRLOCK_PREFIX,
        "JUPYTERHUB_SERVICE_URL": airlock_url.removesuffix(AIRLOCK_PREFIX),
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{AIRLOCK_PREFIX}oauth_callback",
    }


@dataclass(frozen=True)
class HubLaunch:
    """Where the hub and its proxy run, and how everyone reaches them.

    Defaults: on this host, 127.0.0.1 only. In a node's network namespace: `argv_prefix`
    enters it, `bind_host` is an address there (both listen on it), `connect_host` is the
    address pods call the hub API at (the node IP), and `probe_host` is how this process
    reaches the proxy (a relay on the host, on the same port: the ports are chosen free on
    this host, so the relay can take the proxy's port here; `HubEndpoints.public_url` says
    which).
    """

    argv_prefix: tuple[str, ...] = ()
    bind_host: str = "127.0.0.1"
    connect_host: str | None = None
    probe_host: str | None = None
    # Fixed ports (None: free ones on this host). In a node: the public port a relay on the
    # host already listens on, and the hub API on the port the project NetworkPolicies open.
    public_port: int | None = None
    hub_api_port: int | None = None
    airlock_port: int | None = None


@dataclass(frozen=True)
class HubEndpoints:
    """What hub.json records: where people, pods and the hub reach each other."""

    public_url: str  # the proxy, for browsers and the REST API (/hub/api/)
    proxy_api_url: str
    hub_api_url: str  # where the hub API listens
    connect_url: str  # what pods call the hub API at
    probe_url: str  # the public URL as this host reaches it
    airlock_url: str  # the airlock's API, as notebooks and the hub's proxy reach it

    def to_json(self) -> dict[str, str]:
        return dict(self.__dict__)


class DevHub:
    """The hub of one local platform, identified by the platform's state directory.

    `instance` names a second hub beside the first (its own directory and process names),
    as a test that needs a hub with other settings does."""

    def __init__(self, cluster: DevCluster, instance: str = "hub") -> None:
        self.cluster = cluster
        suffix = "" if instance == "hub" else f"-{instance}"
        self.hub_process = HUB_PROCESS + suffix
        self.proxy_process = PROXY_PROCESS + suffix
        self.airlock_process = AIRLOCK_PROCESS + suffix
        self.dir = cluster.state_dir / instance
        self.kubeconfig = self.dir / "kubeconfig"
        self.password_file = self.dir / "dev-password"
        self._token_file = self.dir / "proxy-token"
        self.airlock_token_file = self.dir / "airlock-token"
        self._airlock_cookie_file = self.dir / "airlock-cookie-secret"
        self._endpoints_file = self.dir / "hub.json"

    # --- queries ----------------------------------------------------------------------------

    def processes(self) -> list[Process]:
        names = (self.hub_process, self.proxy_process, self.airlock_process)
        return [p for p in self.cluster.processes() if p.name in names]

    def endpoints(self) -> HubEndpoints | None:
        try:
            return HubEndpoints(**json.loads(self._endpoints_file.read_text()))
        except FileNotFoundError:
            return None

    def env(self) -> dict[str, str]:
        """TRE_HUB_URL, the hub as people and scripts reach it, while it runs."""
        endpoints, procs = self.endpoints(), self.processes()
        if endpoints is None or not procs or not all(p.alive() for p in procs):
            return {}
        return {"TRE_HUB_URL": endpoints.probe_url}

    def is_running(self) -> bool:
        procs = self.processes()
        endpoints = self.endpoints()
        return (
            len(procs) == 3
            and all(p.alive() for p in procs)
            and endpoints is not None
            and _answers(endpoints.probe_url)
        )

    # --- lifecycle --------------------------------------------------------------------------

    def up(
        self,
        settings: Settings,
        progress: Progress,
        *,
        launch: HubLaunch = HubLaunch(),
        extra_env: dict[str, str] | None = None,
    ) -> HubEndpoints:
        """Start the proxy and the hub, wait until /hub/api/ answers through the proxy.

        Needs the platform installed (`tre install`: the hub's ServiceAccount). Running it
        while the hub answers is not an error. `settings` names the hub's ServiceAccount; the
        hub process reads its own settings from the TRE_* environment it inherits (without
        S3 credentials or the audit key), plus the URLs and the development sign-in set here,
        and `extra_env` last (tests use it to give the hub settings it must refuse).
        """
        endpoints = self.endpoints()
        if self.is_running() and endpoints is not None:
            progress(f"hub already running at {endpoints.public_url}")
            return endpoints
        self.down(progress)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._write_hub_kubeconfig(settings)
        _ensure_secret(self.password_file)
        _ensure_secret(self._token_file)
        _ensure_secret(self.airlock_token_file)
        _ensure_secret(self._airlock_cookie_file)
        endpoints = _endpoints(launch)
        self._endpoints_file.write_text(json.dumps(endpoints.to_json(), indent=2))
        token = self._token_file.read_text().strip()
        started: list[Process] = []
        try:
            progress(f"starting configurable-http-proxy on {endpoints.public_url}")
            started.append(self._start_proxy(endpoints, launch, token))
            progress(f"starting JupyterHub (API on {endpoints.hub_api_url})")
            started.append(self._start_hub(endpoints, launch, token, settings, extra_env or {}))
            self.cluster.add_processes(started)
            wait_until_ready(
                started,
                lambda: _answers(endpoints.probe_url),
                f"the hub at {endpoints.probe_url}/hub/api/",
                START_TIMEOUT,
            )
            progress(f"starting the airlock service ({endpoints.airlock_url})")
            airlock = self._start_airlock(endpoints, launch, settings)
            started.append(airlock)
            self.cluster.add_processes([airlock])
            health = f"{endpoints.probe_url}{AIRLOCK_PREFIX}health"
            wait_until_ready(
                [airlock], lambda: _answers(health, ""), f"the airlock at {health}", START_TIMEOUT
            )
        except BaseException:
            for proc in reversed(started):
                proc.stop()
            self.cluster.remove_processes(started)
            raise
        progress(f"hub ready at {endpoints.public_url}")
        return endpoints

    def down(self, progress: Progress) -> None:
        """Stop the hub's services, the hub, then its proxy, by pid; keep state and logs.

        The hub's managed services (the idle culler) run in sessions of their own: they are
        stopped first, by pid, so that none outlives a hub whose clean-up is cut short (it
        interrupts a service and waits up to 10 s, and a service started from a
        non-interactive shell ignores the interrupt). `DevCluster.down` does the same.
        """
        procs = self.processes()
        # The airlock first (it asks the hub), then the hub's own services with the hub.
        order = {self.airlock_process: 0, self.hub_process: 1}
        for proc in sorted(procs, key=lambda p: order.get(p.name, 2)):
            if proc.alive():
                progress(f"stopping {proc.name} (pid {proc.pid}) and what it started")
            stop_with_children(proc)
        self.cluster.remove_processes(procs)

    # --- parts ------------------------------------------------------------------------------

    def _write_hub_kubeconfig(self, settings: Settings) -> None:
        admin = Kube(api_client(self.cluster.kubeconfig))
        identity = hub_user(settings)
        if (
            admin.get(SERVICE_ACCOUNTS, settings.hub_service_account, settings.hub_namespace)
            is None
        ):
            raise DevClusterError(
                f"the hub's ServiceAccount {settings.hub_namespace}/"
                f"{settings.hub_service_account} does not exist; run 'tre install' first (it "
                "makes the hub's identity, which Ready workspaces bind)"
            )
        write_service_account_kubeconfig(
            admin,
            self.cluster.kubeconfig,
            identity,
            self.kubeconfig,
            expiration_seconds=TOKEN_SECONDS,
        )

    def _start_proxy(self, endpoints: HubEndpoints, launch: HubLaunch, token: str) -> Process:
        if not PROXY_SCRIPT.exists():
            raise DevClusterError(
                f"configurable-http-proxy is not installed ({PROXY_SCRIPT} is missing); run "
                "'make proxy' (npm ci from package-lock.json)"
            )
        node = _which("node")
        public_port = urllib.parse.urlsplit(endpoints.public_url).port
        api_port = urllib.parse.urlsplit(endpoints.proxy_api_url).port
        argv = [
            *launch.argv_prefix,
            node,
            str(PROXY_SCRIPT),
            f"--ip={launch.bind_host}",
            f"--port={public_port}",
            f"--api-ip={launch.bind_host}",
            f"--api-port={api_port}",
            # Until the hub adds its routes, everything goes to the hub (as JupyterHub does).
            f"--default-target={endpoints.hub_api_url}",
            f"--error-target={endpoints.hub_api_url}/hub/error",
            "--log-level=info",
        ]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CONFIGPROXY_AUTH_TOKEN": token}
        return spawn(self.proxy_process, argv, self.dir / "proxy.log", env, cwd=self.dir, exe=node)

    def _start_hub(
        self,
        endpoints: HubEndpoints,
        launch: HubLaunch,
        token: str,
        settings: Settings,
        extra_env: dict[str, str],
    ) -> Process:
        argv = [
            *launch.argv_prefix,
            sys.executable,
            "-m",
            "jupyterhub",
            "-f",
            str(HUB_CONFIG_FILE),
        ]
        return spawn(
            self.hub_process,
            argv,
            self.dir / "hub.log",
            self._hub_env(endpoints, token, settings) | extra_env,
            cwd=self.dir,  # jupyterhub.sqlite and the cookie secret live here
            exe=sys.executable,
        )

    def _start_airlock(
        self, endpoints: HubEndpoints, launch: HubLaunch, settings: Settings
    ) -> Process:
        port = urllib.parse.urlsplit(endpoints.airlock_url).port
        argv = [
            *launch.argv_prefix,
            sys.executable,
            "-m",
            "provisioner.cli.main",
            "airlock",
            "serve",
            f"--host={launch.bind_host}",
            f"--port={port}",
            f"--cookie-secret-file={self._airlock_cookie_file}",
        ]
        inherited = {
            key: value
            for key, value in os.environ.items()
            if key.startswith("TRE_") and key not in _NOT_FOR_THE_AIRLOCK
        }
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": self._python_path(),
            "HOME": str(self.dir),
            **inherited,
            "TRE_KUBECONFIG": str(self._airlock_kubeconfig(settings)),
            **self._airlock_s3_key(settings),
            **airlock_service_env(endpoints.hub_api_url, endpoints.airlock_url),
            "JUPYTERHUB_API_TOKEN": self.airlock_token_file.read_text().strip(),
        }
        return spawn(
            self.airlock_process,
            argv,
            self.dir / "airlock.log",
            env,
            cwd=self.dir,
            exe=sys.executable,
        )

    def _airlock_kubeconfig(self, settings: Settings) -> Path:
        # Its own ServiceAccount's token: what its pod has in a cluster, never the admin's.
        from provisioner.devcluster.airlock import airlock_kubeconfig

        return airlock_kubeconfig(self.cluster, settings)

    def _airlock_s3_key(self, settings: Settings) -> dict[str, str]:
        # Its own S3 key, never the admin's: its buckets and the datasets' fingerprints, no
        # dataset bucket (devcluster/s3server.py, `AirlockScope`).
        key, secret = airlock_credentials(self.cluster.state_dir / "s3", AirlockScope.of(settings))
        return {"TRE_S3_ACCESS_KEY_ID": key, "TRE_S3_SECRET_ACCESS_KEY": secret}

    def _python_path(self) -> str:
        # This checkout first: the hub loads the hub_config that this `tre` belongs to.
        return os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)

    def _hub_env(self, endpoints: HubEndpoints, token: str, settings: Settings) -> dict[str, str]:
        inherited = {
            key: value
            for key, value in os.environ.items()
            if key.startswith("TRE_") and key not in _NOT_FOR_THE_HUB
        }
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": self._python_path(),
            "HOME": str(self.dir),
            **inherited,
            "KUBECONFIG": str(self.kubeconfig),
            "CONFIGPROXY_AUTH_TOKEN": token,
            "TRE_HUB_BIND_URL": endpoints.public_url,
            "TRE_HUB_API_BIND_URL": endpoints.hub_api_url,
            "TRE_HUB_CONNECT_URL": endpoints.connect_url,
            "TRE_HUB_PROXY_API_URL": endpoints.proxy_api_url,
            "TRE_HUB_DEV_AUTHENTICATOR": "true",
            "TRE_HUB_DEV_PASSWORD_FILE": str(self.password_file),
            "TRE_HUB_AIRLOCK_TOKEN_FILE": str(self.airlock_token_file),
            "TRE_HUB_DEV_GROUPS": os.environ.get("TRE_HUB_DEV_GROUPS")
            or json.dumps({settings.output_checker_group: list(DEV_OUTPUT_CHECKERS)}),
            "TRE_AIRLOCK_URL": endpoints.airlock_url,
        }


def _endpoints(launch: HubLaunch) -> HubEndpoints:
    # Free on this host; in a node's own network namespace nothing else listens anyway.
    public = launch.public_port or free_port()
    proxy_api = free_port()
    hub_api = launch.hub_api_port or free_port()
    airlock = launch.airlock_port or free_port()
    bind = launch.bind_host
    return HubEndpoints(
        public_url=f"http://{bind}:{public}",
        proxy_api_url=f"http://{bind}:{proxy_api}",
        hub_api_url=f"http://{bind}:{hub_api}",
        connect_url=f"http://{launch.connect_host or bind}:{hub_api}",
        probe_url=f"http://{launch.probe_host or bind}:{public}",
        airlock_url=f"http://{launch.connect_host or bind}:{airlock}{AIRLOCK_PREFIX}",
    )


def _ensure_secret(path: Path) -> None:
    """A random secret in a new file, 0600 from its first byte; an existing one is kept (the
    password someone was told stays valid across restarts)."""
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(24) + "\n")


def _answers(public_url: str, path: str = "/hub/api/") -> bool:
    """True when /hub/api/ answers through the proxy (so both run and the hub's route is in);
    or `path` under `public_url`."""
    try:
        with urllib.request.urlopen(f"{public_url}{path}", timeout=2) as response:  # noqa: S310 - our own URL on a local address
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def _which(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise DevClusterError(
            f"{program} is not on PATH; configurable-http-proxy needs Node.js 20 or newer"
        )
    return os.path.realpath(found)


def sign_in(
    hub_url: str, user: str, password: str, note: str = "tests"
) -> tuple[requests.Session, str]:
    """Sign in on the hub's login form as a person does: (the browser session with its
    cookies, an API token of theirs)."""
    import requests  # only the sign-in needs an HTTP session with cookies

    browser = requests.Session()
    login = f"{hub_url}/hub/login"
    browser.get(login, timeout=10)
    xsrf = browser.cookies.get("_xsrf") or ""
    form = {"username": user, "password": password, "_xsrf": xsrf}
    signed_in = browser.post(login, data=form, allow_redirects=False, timeout=10)
    if signed_in.status_code != 302:
        raise DevClusterError(f"signing in as {user}: {signed_in.status_code} {signed_in.text}")
    made = browser.post(
        f"{hub_url}/hub/api/users/{user}/tokens",
        json={"note": note, "expires_in": 3600},
        headers={"X-XSRFToken": browser.cookies.get("_xsrf") or xsrf},
        timeout=10,
    )
    if made.status_code != 201:
        raise DevClusterError(f"a token for {user}: {made.status_code} {made.text}")
    return browser, str(made.json()["token"])
