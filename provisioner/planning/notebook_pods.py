"""What a notebook pod is to the platform, defined once for the hub and for `tre check`.

The hub's configuration (`hub_config.config`) hands these to KubeSpawner; `tre check
--probe-from-pods` builds its short-lived probe pods from the same values
(`provisioner.planning.runtime_probes`), so the workspace's NetworkPolicies, Pod Security and
resolver treat a probe exactly as they treat a researcher's notebook: a probe that differed in
labels, DNS or security context would prove something about another kind of pod.
"""

from __future__ import annotations

from typing import Any, Final

from provisioner import __version__
from provisioner.models.resources import BrowserUsage, Workspace
from provisioner.models.rules import ClassificationTier
from provisioner.models.settings import MIB, Settings
from provisioner.planning import names
from provisioner.planning.network_policies import NOTEBOOK_POD_LABELS
from provisioner.planning.storage import NOTEBOOK_GID, NOTEBOOK_UID

# Built from images/notebook/Dockerfile and tagged with the platform version, so a hub and the
# notebooks it starts come from one release.
NOTEBOOK_IMAGE: Final = f"ucloud-tre/notebook:{__version__}"
# The browser gate in front of every notebook server (images/gate), from the same release.
GATE_IMAGE: Final = f"ucloud-tre/gate:{__version__}"
GATE_CONTAINER: Final = "gate"
# The gate's own user and group, not the notebook's: no process a researcher starts can
# signal it, trace it or write its files (the containers of a pod do not share a process
# namespace either, so none can even see it).
GATE_UID: Final = 10002
# Its count of the day survives a restart of the gate container in this volume, which the
# notebook container does not mount.
GATE_STATE_VOLUME: Final = "gate-state"
GATE_STATE_PATH: Final = "/var/run/tre-gate"
# The pod's own ServiceAccount token, for the gate alone: it proves to the airlock which pod
# a batch of records comes from (a TokenReview names the pod). Its audience is the gate's,
# so the API server itself does not accept it; the notebook container does not mount it.
GATE_TOKEN_VOLUME: Final = "gate-token"  # noqa: S105 (a name, not a secret)
GATE_TOKEN_PATH: Final = "/var/run/tre-gate-token"  # noqa: S105 (a name, not a secret)
GATE_TOKEN_AUDIENCE: Final = "tre-gate"  # noqa: S105 (a name, not a secret)
GATE_TOKEN_SECONDS: Final = 3600
# Where the airlock takes the gates' records, under its URL (names.airlock_url).
GATE_RECORDS_PATH: Final = "api/gate/records"
# z2jh's hub NetworkPolicy admits pods with this label (from other namespaces only with
# `interNamespaceAccessLabels: accept`); our own policies are in the project namespaces.
Z2JH_HUB_ACCESS_LABEL: Final = "hub.jupyter.org/network-access-hub"


def notebook_labels(project: str) -> dict[str, str]:
    """Every label the hub gives a notebook pod of `project` (KubeSpawner's component label,
    which the project NetworkPolicies select, and `extra_labels`)."""
    return {
        **NOTEBOOK_POD_LABELS,
        names.LABEL_PROJECT: project,
        Z2JH_HUB_ACCESS_LABEL: "true",
    }


def pod_security_context() -> dict[str, Any]:
    """Pod Security Admission `restricted` (security invariant 4), at the pod level. Numeric
    ids: with a named USER the kubelet cannot verify runAsNonRoot."""
    return {
        "runAsNonRoot": True,
        "runAsUser": NOTEBOOK_UID,
        "runAsGroup": NOTEBOOK_GID,
        # Volumes are group-owned by `users`, so project files stay shared among members.
        "fsGroup": NOTEBOOK_GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(uid: int = NOTEBOOK_UID, gid: int = NOTEBOOK_GID) -> dict[str, Any]:
    """`restricted` at the container level: no privilege escalation, every capability
    dropped; the notebook's user unless another is named (the gate's)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def notebook_dns(settings: Settings) -> dict[str, Any]:
    """The pod-spec fields that make the platform's resolver a notebook's only nameserver.

    Never the cluster's DNS: kube-dns forwards what it does not know to the internet, and a
    lookup of <data>.attacker.example would carry data out. The project NetworkPolicies allow
    port 53 to the platform's resolver only; without one, no nameserver at all."""
    nameservers = [str(settings.dns_resolver_ip)] if settings.dns_resolver_ip else []
    return {
        "dnsPolicy": "None",
        "dnsConfig": {
            # The kubelet requires one nameserver with dnsPolicy None; a loopback address
            # inside the pod answers nothing, which is what "no resolver" means.
            "nameservers": nameservers or ["127.0.0.1"],
            "searches": [],
            "options": [{"name": "ndots", "value": "1"}],
        },
    }


def hub_connect_url(settings: Settings) -> str:
    """The URL notebook pods call the hub API at."""
    if settings.hub_connect_url is not None:
        return settings.hub_connect_url
    return (
        # The hub's Service by its fully qualified name (names.service_fqdn says why).
        f"http://{names.service_fqdn(names.HUB_SERVICE, settings.hub_namespace)}"
        f":{settings.hub_api_port}"
    )


def workspace_tier(workspace: Workspace) -> ClassificationTier:
    """The highest classification of the workspace's datasets (public without any): what its
    browser limits follow."""
    return max(
        (dataset.classification for dataset in workspace.spec.datasets),
        key=lambda tier: tier.rank,
        default=ClassificationTier.PUBLIC,
    )


def notebook_service_url(settings: Settings, prefix: str) -> str:
    """Where the Jupyter server listens: the pod's loopback, so only the gate reaches it."""
    return f"http://127.0.0.1:{settings.notebook_server_port}{prefix}"


def gate_container(
    settings: Settings,
    *,
    user: str,
    project: str,
    prefix: str,
    tier: ClassificationTier,
    image: str = GATE_IMAGE,
    used_today: BrowserUsage | None = None,
) -> dict[str, Any]:
    """The browser gate beside a notebook: it listens on the port the hub and the proxy reach
    (which KubeSpawner declares on the notebook container: a pod's containers share one
    network namespace, and a second declaration of the port would be a duplicate), in front
    of the Jupyter server on the pod's loopback, with the limits of the workspace's tier.

    Its own user, a read-only root file system, every capability dropped: the researcher owns
    every process of the notebook container and none of this one. It sends its records to the
    airlock with the pod's token (`gate_token_volume`), and starts from what the person's
    browsers already received from this workspace today (`used_today`, the Workspace's
    status), so a restarted server does not get a fresh budget."""
    limits = settings.browser_limits_by_tier[tier]
    env = {
        "GATE_LISTEN": f":{settings.notebook_port}",
        "GATE_UPSTREAM": f"127.0.0.1:{settings.notebook_server_port}",
        "GATE_PREFIX": prefix,
        "GATE_USER": user,
        "GATE_PROJECT": project,
        "GATE_READ_CAP": str(limits.read_cap_mib * MIB),
        "GATE_UPLOAD_CAP": str(limits.upload_cap_mib * MIB),
        "GATE_CONTENT_BUDGET": str(limits.content_budget_mib * MIB),
        "GATE_OTHER_BUDGET": str(limits.other_budget_mib * MIB),
        "GATE_STATE_DIR": GATE_STATE_PATH,
        "GATE_RECORDS_URL": names.airlock_url(settings) + GATE_RECORDS_PATH,
        "GATE_TOKEN_FILE": f"{GATE_TOKEN_PATH}/token",
        "GATE_CONTENT_USED": str(_used(used_today, "content", limits.content_budget_mib * MIB)),
        "GATE_OTHER_USED": str(_used(used_today, "other", limits.other_budget_mib * MIB)),
    }
    return {
        "name": GATE_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": name, "value": value} for name, value in env.items()],
        "securityContext": {
            **container_security_context(GATE_UID, GATE_UID),
            "readOnlyRootFilesystem": True,
        },
        # Measured at about 10 MiB resident; the limit bounds the two bodies it may hold whole
        # (each at most the read or upload cap).
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {
                "cpu": "500m",
                "memory": f"{64 + 2 * max(limits.read_cap_mib, limits.upload_cap_mib)}Mi",
            },
        },
        "volumeMounts": [
            {"name": GATE_STATE_VOLUME, "mountPath": GATE_STATE_PATH},
            {"name": GATE_TOKEN_VOLUME, "mountPath": GATE_TOKEN_PATH, "readOnly": True},
        ],
    }


def _used(usage: BrowserUsage | None, meter: str, budget: int) -> int:
    """What a new gate counts as used today on `meter`: the whole budget once it was used up
    (the bytes refused at the crossing were never counted, so the count alone stays below)."""
    if usage is None:
        return 0
    if meter in usage.crossed:
        return max(budget, usage.content if meter == "content" else usage.other)
    return usage.content if meter == "content" else usage.other


def gate_volumes() -> list[dict[str, Any]]:
    """The gate's state (the day's count and the records not yet delivered, bounded by the
    gate at 16 MiB, with room for its rewrite) and its token (`GATE_TOKEN_VOLUME`)."""
    return [
        {"name": GATE_STATE_VOLUME, "emptyDir": {"sizeLimit": "40Mi"}},
        {
            "name": GATE_TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": GATE_TOKEN_AUDIENCE,
                            "expirationSeconds": GATE_TOKEN_SECONDS,
                            "path": "token",
                        }
                    }
                ]
            },
        },
    ]
