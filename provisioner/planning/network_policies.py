"""NetworkPolicies of a project namespace: deny everything, then allow four arrows.

    notebook --> platform resolver   UDP/TCP 53
    notebook --> hub API             settings.hub_api_port
    notebook --> airlock             settings.airlock_port
    hub, proxy --> notebook          settings.notebook_port

Policies are additive unions, so the deny-all policy isolates every pod in both directions
and each allow policy opens exactly one arrow. Namespaces are selected only by
`kubernetes.io/metadata.name`, which the control plane sets and nobody can change; any other
namespace label can be set by whoever may label namespaces.

DNS goes to the platform's own resolver only, never to kube-dns: kube-dns forwards every name
it does not serve to the internet, so a recursive lookup of `<data>.attacker.example` would
carry data out. The platform's resolver answers only the names the platform serves and
forwards nothing (settings.dns_resolver_ip).

The peers are pods, selected by namespace and labels. A label alone proves nothing (whoever
creates pods in a platform namespace sets it), so admission ties each peer label to the
platform's ServiceAccount for that role (`platform_peers`, policy `tre-platform-peer-pods` in
planning/admission.py). Only where the hub, proxy, airlock and
resolver run on a host outside the pod network (the local development node,
settings.platform_host_ip) is the peer that one address, as a /32 ipBlock; there is no other
ipBlock, so the internet, cloud metadata (169.254.169.254) and other projects stay unreachable.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from provisioner.models.settings import Settings
from provisioner.planning import names

NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
# Labels set by others: KubeSpawner on notebook pods, zero-to-jupyterhub on hub and proxy
# pods, and our Helm chart on the airlock and the resolver.
NOTEBOOK_POD_LABELS: Final = {"component": "singleuser-server"}
HUB_POD_LABELS: Final = {"component": "hub"}
HUB_AND_PROXY_PODS: Final = {
    "matchExpressions": [{"key": "component", "operator": "In", "values": ["hub", "proxy"]}]
}
# The platform's non-forwarding resolver (a CoreDNS the Helm chart runs in dns_namespace).
DNS_POD_LABELS: Final = {"app.kubernetes.io/name": "tre-dns"}
AIRLOCK_POD_LABELS: Final = {"app.kubernetes.io/name": "tre-airlock"}
# zero-to-jupyterhub's proxy label, which HUB_AND_PROXY_PODS admits next to the hub's
PROXY_POD_LABELS: Final = {"component": "proxy"}


@dataclass(frozen=True)
class PlatformPeer:
    """A pod the project NetworkPolicies admit: in `namespace`, wearing `label` (key, value),
    run by ServiceAccount `service_account` there ("" when the settings name none: then no
    pod may wear the label)."""

    role: str
    namespace: str
    label: tuple[str, str]
    service_account: str


def platform_peers(settings: Settings) -> list[PlatformPeer]:
    """Every peer label the project NetworkPolicies trust, with the account that may wear it."""
    airlock = names.service_account_of(settings.airlock_user)
    airlock_account = airlock[1] if airlock and airlock[0] == settings.airlock_namespace else ""
    (hub,) = HUB_POD_LABELS.items()
    (proxy,) = PROXY_POD_LABELS.items()
    (airlock_label,) = AIRLOCK_POD_LABELS.items()
    (dns,) = DNS_POD_LABELS.items()
    return [
        PlatformPeer("hub", settings.hub_namespace, hub, settings.hub_service_account),
        PlatformPeer("proxy", settings.hub_namespace, proxy, names.PROXY_SERVICE_ACCOUNT),
        PlatformPeer("airlock", settings.airlock_namespace, airlock_label, airlock_account),
        PlatformPeer("resolver", settings.dns_namespace, dns, names.DNS_SERVICE_ACCOUNT),
    ]


def network_policies(project: str, settings: Settings) -> list[dict[str, Any]]:
    """The deny-all policy first, then one policy per allowed arrow."""
    return [
        # every pod -x-> anything, anything -x-> every pod: no rules, both directions.
        _policy(
            project,
            names.POLICY_DEFAULT_DENY,
            {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        ),
        _policy(
            project,
            names.POLICY_ALLOW_DNS,
            {
                "podSelector": _notebook_pods(),
                "policyTypes": ["Egress"],
                "egress": [
                    # notebook --> platform resolver (TCP for answers too large for UDP)
                    {
                        "to": [_peer(settings, settings.dns_namespace, DNS_POD_LABELS)],
                        "ports": [_port(53, "UDP"), _port(53, "TCP")],
                    }
                ],
            },
        ),
        _policy(
            project,
            names.POLICY_ALLOW_HUB_API,
            {
                "podSelector": _notebook_pods(),
                "policyTypes": ["Egress"],
                "egress": [
                    # notebook --> hub API (activity reports, OAuth token checks)
                    {
                        "to": [_peer(settings, settings.hub_namespace, HUB_POD_LABELS)],
                        "ports": [_port(settings.hub_api_port)],
                    }
                ],
            },
        ),
        _policy(
            project,
            names.POLICY_ALLOW_AIRLOCK,
            {
                "podSelector": _notebook_pods(),
                "policyTypes": ["Egress"],
                "egress": [
                    # notebook --> airlock (the only way out for results: reviewed exports)
                    {
                        "to": [_peer(settings, settings.airlock_namespace, AIRLOCK_POD_LABELS)],
                        "ports": [_port(settings.airlock_port)],
                    }
                ],
            },
        ),
        _policy(
            project,
            names.POLICY_ALLOW_FROM_HUB_PROXY,
            {
                "podSelector": _notebook_pods(),
                "policyTypes": ["Ingress"],
                "ingress": [
                    # hub --> notebook (start-up and health checks)
                    # proxy --> notebook (the researcher's browser traffic)
                    {
                        "from": [_peer(settings, settings.hub_namespace, HUB_AND_PROXY_PODS)],
                        "ports": [_port(settings.notebook_port)],
                    }
                ],
            },
        ),
    ]


def _policy(project: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": names.object_metadata(name, project, namespace=names.namespace_name(project)),
        "spec": spec,
    }


def _notebook_pods() -> dict[str, Any]:
    return {"matchLabels": dict(NOTEBOOK_POD_LABELS)}


def _peer(settings: Settings, namespace: str, pods: Mapping[str, Any]) -> dict[str, Any]:
    """The platform component as a peer: its pods (`pods`: labels, or a whole selector with
    matchExpressions), or its host's single address where it runs outside the pod network."""
    if settings.platform_host_ip is not None:
        return {"ipBlock": {"cidr": f"{settings.platform_host_ip}/32"}}
    selector = dict(pods) if "matchExpressions" in pods else {"matchLabels": dict(pods)}
    # Both selectors in one peer mean AND: these pods, in that namespace only. Copies, so no
    # two manifests share a mutable dict.
    return {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}},
        "podSelector": copy.deepcopy(selector),
    }


def _port(port: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"protocol": protocol, "port": port}
