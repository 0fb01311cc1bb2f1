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
from provisioner.models.settings import Settings
from provisioner.planning import names
from provisioner.planning.network_policies import NOTEBOOK_POD_LABELS
from provisioner.planning.storage import NOTEBOOK_GID, NOTEBOOK_UID

# Built from images/notebook/Dockerfile and tagged with the platform version, so a hub and the
# notebooks it starts come from one release.
NOTEBOOK_IMAGE: Final = f"ucloud-tre/notebook:{__version__}"
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


def container_security_context() -> dict[str, Any]:
    """`restricted` at the container level: no privilege escalation, every capability
    dropped."""
    return {
        "runAsNonRoot": True,
        "runAsUser": NOTEBOOK_UID,
        "runAsGroup": NOTEBOOK_GID,
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
