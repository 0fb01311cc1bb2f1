"""The dev node's cluster DNS: what kube-dns is on any cluster, for the platform's own pods.

Pods with the default `dnsPolicy: ClusterFirst` (the chart's controller, hub, proxy and
airlock) find each other by Service name, e.g. the hub's proxy at
``proxy-api.tre-hub.svc.cluster.local``. The kubelet hands them this resolver
(`node.cluster_dns_ip`, kubelet `clusterDNS`); it is a pod, labelled and placed as kube-dns
is (``kube-system``, ``k8s-app: kube-dns``), so the chart's NetworkPolicies, which open DNS to
exactly those pods, work here as they would on a real cluster.

It is the platform's own CoreDNS image (no forward plugin compiled in) with the `kubernetes`
plugin for ``cluster.local`` and NXDOMAIN for everything else: the node has no way out and
its pods get no resolver that pretends otherwise. Notebooks never use it: they have
`dnsPolicy: None` and the workspace resolver (dns.py), which answers the hub's and the
airlock's names only; the workspace NetworkPolicies admit no other port 53.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

from provisioner.devcluster.node import CLUSTER_DOMAIN
from provisioner.errors import DevClusterError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client
from provisioner.kube.resources import PODS

NAMESPACE: Final = "kube-system"
NAME: Final = "coredns"
SERVICE: Final = "kube-dns"
LABELS: Final = {"k8s-app": "kube-dns"}
UID: Final = 10001  # the image's user (images/dns/Dockerfile)
READY_TIMEOUT: Final = 90.0  # seconds; Ready in ~5 s on an idle node

Manifest = dict[str, Any]


def corefile(domain: str = CLUSTER_DOMAIN) -> str:
    """Service names of `domain` from the API server; NXDOMAIN for every other name."""
    return (
        f"{domain}:53 {{\n"
        "    errors\n"
        f"    kubernetes {domain} {{\n"
        # Pod A records (a-b-c-d.ns.pod...) answer any address asked for: nothing needs them.
        "        pods disabled\n"
        "    }\n"
        "}\n"
        ".:53 {\n"
        "    errors\n"
        "    template ANY ANY {\n"
        "        rcode NXDOMAIN\n"
        "    }\n"
        "}\n"
    )


def manifests(image: str, service_ip: str) -> list[Manifest]:
    """Everything the cluster DNS is: its identity (read Services and EndpointSlices, nothing
    else), its Corefile, one pod (a Deployment) and the Service at `service_ip`."""
    meta = {"namespace": NAMESPACE, "labels": LABELS}
    role = f"tre-dev:{NAME}"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role, "labels": LABELS},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role, "labels": LABELS},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": NAME, **meta},
            "data": {"Corefile": corefile()},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, **meta},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": LABELS},
                "template": {"metadata": {"labels": LABELS}, "spec": _pod_spec(image)},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, **meta},
            "spec": {
                "clusterIP": service_ip,
                "selector": LABELS,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"},
                ],
            },
        },
    ]


def _pod_spec(image: str) -> Manifest:
    # Pod Security `restricted`, like every pod of the platform; port 53 without a capability.
    return {
        "serviceAccountName": NAME,
        "enableServiceLinks": False,
        # Its own resolver would be itself: it resolves nothing but cluster.local anyway.
        "dnsPolicy": "Default",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}],
        },
        "containers": [
            {
                "name": "coredns",
                "image": image,
                "imagePullPolicy": "Never",  # imported into the node, never pulled
                "args": ["-conf", "/etc/coredns/Corefile"],
                "ports": [
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                ],
                "readinessProbe": {"tcpSocket": {"port": 53}, "periodSeconds": 2},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "resources": {
                    "requests": {"cpu": "50m", "memory": "32Mi"},
                    "limits": {"memory": "64Mi"},
                },
                "volumeMounts": [
                    {"name": "corefile", "mountPath": "/etc/coredns", "readOnly": True}
                ],
            }
        ],
        "volumes": [{"name": "corefile", "configMap": {"name": NAME}}],
    }


def start_cluster_dns(kubeconfig: Path, image: str, service_ip: str) -> None:
    """Apply `manifests` (idempotent: server-side apply) and wait until a pod answers."""
    kube = Kube(api_client(kubeconfig))
    for manifest in manifests(image, service_ip):
        kube.apply(manifest)
    selector = ",".join(f"{k}={v}" for k, v in LABELS.items())
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if any(_ready(pod) for pod in kube.list(PODS, namespace=NAMESPACE, selector=selector)):
            return
        time.sleep(1)
    raise DevClusterError(
        f"the cluster DNS ({NAMESPACE}/{NAME}) was not Ready within {READY_TIMEOUT:.0f}s; "
        f"see `kubectl -n {NAMESPACE} describe pods -l {selector}`"
    )


def _ready(pod: Manifest) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
