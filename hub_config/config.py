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
  seccomp, no ServiceAccount token, no init or sidecar containers;
- storage: nothing provisioned by the hub; each workspace brings its volumes (read-only
  datasets, the shared /project claim) through its profile;
- labels: `component=singleuser-server` (KubeSpawner's default), which the project
  NetworkPolicies select and the controller uses to stop notebooks of a frozen workspace;
- workspaces: the profile list and the last check before a pod is created;
- offline: nothing in the notebook tries the internet by default, and users cannot override
  the image's Jupyter config from their home directory;
- dns: the platform's non-forwarding resolver is the notebook's only nameserver.
"""

from __future__ import annotations

from typing import Final

from traitlets.config import Config

from hub_config.workspaces import (
    WorkspaceReader,
    confine_pod,
    make_profile_list,
    read_workspaces_from_cluster,
)
from provisioner import __version__
from provisioner.models.settings import Settings
from provisioner.planning import names
from provisioner.planning.network_policies import NOTEBOOK_POD_LABELS
from provisioner.planning.storage import NOTEBOOK_GID, NOTEBOOK_UID, PROJECT_MOUNT_PATH

SPAWNER_CLASS: Final = "kubespawner.KubeSpawner"
# Built from images/notebook/Dockerfile and tagged with the platform version, so a hub and the
# notebooks it starts come from one release.
NOTEBOOK_IMAGE: Final = f"ucloud-tre/notebook:{__version__}"
# Not "tre-<slug>", so no project can ever own it, and the hub has no RoleBinding there.
NO_WORKSPACE_NAMESPACE: Final = "no-workspace-selected"
# The hub's Service as zero-to-jupyterhub names it. Notebooks run in other namespaces, where
# the chart's short `http://hub:8081` does not resolve (z2jh #1916), so the URL is the FQDN.
HUB_SERVICE_NAME: Final = "hub"
CLUSTER_DOMAIN: Final = "cluster.local"
# z2jh's hub NetworkPolicy admits pods with this label (from other namespaces only with
# `interNamespaceAccessLabels: accept`); our own policies are in the project namespaces.
Z2JH_HUB_ACCESS_LABEL: Final = "hub.jupyter.org/network-access-hub"
# Seconds. A first start pulls the image and mounts S3 datasets through the CSI driver.
START_TIMEOUT: Final = 300


def update_spawner(c: Config, settings: Settings, *, notebook_image: str = NOTEBOOK_IMAGE) -> None:
    c.JupyterHub.spawner_class = SPAWNER_CLASS
    c.KubeSpawner.image = notebook_image
    # A pinned tag never changes, so pulling again would only add a registry round trip.
    c.KubeSpawner.image_pull_policy = "IfNotPresent"
    # Explicit, so JupyterHub's arguments (default_url) reach the server; KubeSpawner drops
    # them when it falls back to the image's CMD.
    c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
    # The port the project NetworkPolicies open from the hub and the proxy.
    c.KubeSpawner.port = settings.notebook_port
    c.KubeSpawner.default_url = "/lab"
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
    c.JupyterHub.hub_connect_url = (
        f"http://{HUB_SERVICE_NAME}.{settings.hub_namespace}.svc.{CLUSTER_DOMAIN}"
        f":{settings.hub_api_port}"
    )


def update_pod_security(c: Config, settings: Settings) -> None:
    # Numeric ids: with a named USER the kubelet cannot verify runAsNonRoot.
    c.KubeSpawner.uid = NOTEBOOK_UID
    c.KubeSpawner.gid = NOTEBOOK_GID
    # Volumes are group-owned by `users`, so project files stay shared among members.
    c.KubeSpawner.fs_gid = NOTEBOOK_GID
    c.KubeSpawner.supplemental_gids = []
    c.KubeSpawner.privileged = False
    c.KubeSpawner.allow_privilege_escalation = False
    c.KubeSpawner.pod_security_context = {
        "runAsNonRoot": True,
        "runAsUser": NOTEBOOK_UID,
        "runAsGroup": NOTEBOOK_GID,
        "fsGroup": NOTEBOOK_GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    c.KubeSpawner.container_security_context = {
        "runAsNonRoot": True,
        "runAsUser": NOTEBOOK_UID,
        "runAsGroup": NOTEBOOK_GID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # The project's default ServiceAccount, and no token: a notebook has no business with
    # the Kubernetes API, and a token there would be the user's to keep.
    c.KubeSpawner.service_account = None
    c.KubeSpawner.automount_service_account_token = False
    # Only the notebook container gets the security context above; nothing else may run.
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
    c.KubeSpawner.extra_labels = {
        # The server name is the project slug (KubeSpawner expands the template per pod).
        names.LABEL_PROJECT: "{unescaped_servername}",
        Z2JH_HUB_ACCESS_LABEL: "true",
    }


def update_workspaces(
    c: Config,
    settings: Settings,
    *,
    workspace_reader: WorkspaceReader = read_workspaces_from_cluster,
) -> None:
    # Called per server: the profile of the server's project, or a clear refusal.
    c.KubeSpawner.profile_list = make_profile_list(
        workspace_reader,
        forbidden_namespaces=names.platform_namespaces(settings),
    )
    c.KubeSpawner.modify_pod_hook = confine_pod


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
    # Never the cluster's DNS: kube-dns forwards what it does not know to the internet, and a
    # lookup of <data>.attacker.example would carry data out. The project NetworkPolicies
    # allow port 53 to the platform's resolver only; without one, no nameserver at all.
    nameservers = [str(settings.dns_resolver_ip)] if settings.dns_resolver_ip else []
    c.KubeSpawner.extra_pod_config = {
        "dnsPolicy": "None",
        "dnsConfig": {
            # The kubelet requires one nameserver with dnsPolicy None; a loopback address
            # inside the pod answers nothing, which is what "no resolver" means.
            "nameservers": nameservers or ["127.0.0.1"],
            "searches": [],
            "options": [{"name": "ndots", "value": "1"}],
        },
    }


def apply_config(
    c: Config,
    settings: Settings,
    *,
    workspace_reader: WorkspaceReader = read_workspaces_from_cluster,
    notebook_image: str = NOTEBOOK_IMAGE,
) -> None:
    """Every area, in order. Only sets values on `c`."""
    update_spawner(c, settings, notebook_image=notebook_image)
    update_namespaces(c, settings)
    update_pod_security(c, settings)
    update_storage(c, settings)
    update_labels(c, settings)
    update_workspaces(c, settings, workspace_reader=workspace_reader)
    update_offline(c, settings)
    update_dns(c, settings)
