"""`tre check` judgements: pure functions from what the cluster holds to pass/fail findings.

Each function takes values read once from the cluster (`provisioner.compliance.read`) and
returns `Finding`s; nothing here talks to the API server, S3 or a subprocess, so every rule
is a table-driven unit test. A finding names its check, its scope (a workspace or
"cluster"), whether it passed, a detail a reviewer can act on, and the SATRE v2 statement it
evidences (`SATRE`, quoted from the specification, docs/architecture.md has the table).

The network judgement reads a connectivity map computed by network-config-analyzer (NCA) from
the live NetworkPolicies over representative pods (`nca_world`): one notebook pod and one
other pod per project namespace, the hub, proxy, airlock and resolver pods in their
namespaces, and an outsider that wears the hub's labels in a namespace of its own (a spoof
that namespace selection must reject). Only project namespaces' policies are given to NCA,
so platform pods are as open as they can be: isolation is proven by the workspace's own
policies alone.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from provisioner.models.resources import (
    Dataset,
    DatasetSource,
    DatasetSpec,
    S3Source,
    Workspace,
    WorkspacePhase,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier
from provisioner.planning import names
from provisioner.planning.datasets import PLATFORM_BUCKET_REFUSAL
from provisioner.planning.network_policies import (
    AIRLOCK_POD_LABELS,
    DNS_POD_LABELS,
    HUB_POD_LABELS,
    NOTEBOOK_POD_LABELS,
    PROXY_POD_LABELS,
    network_policies,
)
from provisioner.planning.project import pods_to_stop
from provisioner.planning.workspace import PSA_LEVEL

Manifest = dict[str, Any]
CLUSTER: Final = "cluster"
METADATA_ADDRESS: Final = ipaddress.IPv4Address("169.254.169.254")

# SATRE v2 statements the checks evidence: index -> the statement (specification.yaml of
# sa-tre/satre-specification, v2.0), shortened only by dropping "Your TRE must".
SATRE: Final = {
    "2.1.14": "maintain segregation of users and data from different projects when using all "
    "compute",
    "2.2.09": "control and manage all of its network infrastructure",
    "2.2.10": "not allow connectivity between users in different projects",
    "2.2.11": "block outbound connections to the internet by default",
    "2.2.12": "monitor the configuration of your TRE to check for misconfigurations",
    "2.5.03": "maintain security logs of significant events",
    "3.2.03": "restrict a user's access to only data required in their work",
}

# check id -> (SATRE statement, what passing means)
CHECKS: Final = {
    "net-internet": ("2.2.11", "no pod reaches an address outside the platform"),
    "net-metadata": ("2.2.11", f"no pod reaches the metadata address {METADATA_ADDRESS}"),
    "net-apiserver": ("2.2.09", "no pod reaches the API server"),
    "net-cross-project": ("2.2.10", "no traffic to or from other projects or outsiders"),
    "net-allowed-paths": ("2.2.09", "exactly the hub, proxy, airlock and DNS arrows are open"),
    "net-as-planned": ("2.2.12", "live NetworkPolicies equal the planned ones (structural)"),
    "psa-restricted": ("2.1.14", "Pod Security enforces restricted at the pinned version"),
    "no-foreign-objects": ("2.1.14", "no NetworkPolicy, RoleBinding or pod the TRE did not make"),
    "rbac-researcher": (
        "3.2.03",
        "a member cannot run pods, exec, read secrets or write Workspaces",
    ),
    "rbac-hub": ("2.1.14", "the hub may run pods only in Ready workspaces"),
    "rbac-controller": ("2.2.09", "the controller holds only its scope"),
    "rbac-kubelet-api": (
        "2.1.14",
        "nobody but the control plane reaches the kubelet's exec, run, logs or checkpoints",
    ),
    "rbac-airlock": (
        "2.2.09",
        "the airlock acts for people only, only on exports, and holds only its scope",
    ),
    "datasets-read-only": ("3.2.03", "every dataset is read-only at PV, PVC and pod"),
    "audit-chain": ("2.5.03", "the audit log's hash chain and signatures verify"),
    "hub-sign-in": (
        "3.2.03",
        "the hub signs people in through the identity provider, never a shared password",
    ),
    "dataset-platform-buckets": (
        "3.2.03",
        "the API server refuses a dataset on any of the platform's own buckets",
    ),
    "admission-exemptions": (
        "2.2.12",
        "the kube-system accounts the installed policies exempt, each one planned",
    ),
    # --probe-from-pods: real connections from a notebook-labelled pod (runtime_probes.py)
    "runtime-hub-api": ("2.2.09", "a probe pod reaches the hub API (the positive control)"),
    "runtime-dns": ("2.2.11", "the resolver answers the hub's name and nothing outside"),
    "runtime-apiserver": ("2.2.09", "a probe pod cannot connect to the API server"),
    "runtime-outside": ("2.2.11", "a probe pod cannot connect to any --outside address"),
    "runtime-kubelet": ("2.2.09", "a probe pod cannot connect to a node's kubelet"),
    "runtime-s3": (
        "2.2.09",
        "a probe pod cannot connect to the platform's S3, at its address or a node's",
    ),
    "runtime-cross-project": ("2.2.10", "probe pods of two workspaces cannot connect"),
}
# the findings network-config-analyzer proves (judge_network), in report order
NCA_CHECKS: Final = (
    "net-internet",
    "net-metadata",
    "net-apiserver",
    "net-cross-project",
    "net-allowed-paths",
)


@dataclass(frozen=True)
class Finding:
    check: str
    scope: str  # a project (workspace) or CLUSTER
    passed: bool
    detail: str

    @property
    def satre(self) -> str:
        return CHECKS[self.check][0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.check,
            "scope": self.scope,
            "passed": self.passed,
            "satre": self.satre,
            "detail": self.detail,
        }


def finding(check: str, scope: str, problems: Sequence[str], ok: str) -> Finding:
    """Passed when there are no problems; the detail lists them, or says what was proven."""
    if problems:
        return Finding(check, scope, False, "; ".join(problems))
    return Finding(check, scope, True, ok)


# --- the network: NCA's world and its verdict --------------------------------------------------

NOTEBOOK_POD: Final = "notebook"
OTHER_POD: Final = "other"  # any pod in the namespace that is not a notebook
OUTSIDER_NAMESPACE: Final = "tre-check-outsider"
OUTSIDER_POD: Final = "outsider"


@dataclass(frozen=True)
class PlatformPods:
    """namespace/name of the representative platform pods."""

    hub: str
    proxy: str
    airlock: str
    dns: str


def platform_pods(settings: Settings) -> PlatformPods:
    return PlatformPods(
        hub=f"{settings.hub_namespace}/hub",
        proxy=f"{settings.hub_namespace}/proxy",
        airlock=f"{settings.airlock_namespace}/airlock",
        dns=f"{settings.dns_namespace}/dns",
    )


def nca_world(projects: Sequence[str], settings: Settings) -> tuple[list[Manifest], list[Manifest]]:
    """(namespaces, pods) for NCA: what the live policies are evaluated over."""
    platform = platform_pods(settings)
    pods: list[tuple[str, dict[str, str]]] = []
    for project in projects:
        namespace = names.namespace_name(project)
        pods.append((f"{namespace}/{NOTEBOOK_POD}", dict(NOTEBOOK_POD_LABELS)))
        pods.append((f"{namespace}/{OTHER_POD}", {"app": "anything-else"}))
    pods += [
        (platform.hub, dict(HUB_POD_LABELS)),
        (platform.proxy, dict(PROXY_POD_LABELS)),
        (platform.airlock, dict(AIRLOCK_POD_LABELS)),
        (platform.dns, dict(DNS_POD_LABELS)),
        # wears the hub's labels outside the hub's namespace: must get nowhere
        (f"{OUTSIDER_NAMESPACE}/{OUTSIDER_POD}", dict(HUB_POD_LABELS)),
    ]
    namespace_names = sorted({p.split("/")[0] for p, _ in pods})
    namespaces = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}},
        }
        for n in namespace_names
    ]
    pod_objects = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": ref.split("/")[0], "name": ref.split("/")[1], "labels": lab},
            "spec": {"containers": [{"name": "main", "image": "none"}]},
            # NCA wants a running pod with an address; it never uses the address for ipBlocks
            "status": {"phase": "Running", "podIP": "10.255.255.254"},
        }
        for ref, lab in pods
    ]
    return namespaces, pod_objects


# A connection set: (protocol, first port, last port); "*" is every protocol and port.
Conn = tuple[str, int, int]
ALL: Final[frozenset[Conn]] = frozenset({("*", 0, 65535)})
IpRange = tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]
Endpoint = str | IpRange  # "namespace/pod" or an address range


@dataclass(frozen=True)
class Edge:
    src: Endpoint
    dst: Endpoint
    conns: frozenset[Conn]


_LINE = re.compile(r"^(?P<src>\S+) => (?P<dst>\S+) : (?P<conns>.+)$")
_GROUP = re.compile(r"\{([^{}]*)\}")


class NcaOutputError(ValueError):
    """A line of NCA's connectivity map this parser does not understand."""


def parse_connectivity(text: str) -> list[Edge]:
    """NCA's `--connectivity -o txt_no_fw_rules` output as edges.

    Lines look like `ns/pod[Pod] => 10.0.0.1-10.0.0.9 : {protocols:TCP,dst_ports:53,80-81}`.
    A connection description we cannot read raises: guessing would be failing open.
    """
    edges = []
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue  # headers, warnings, timing
        edges.append(
            Edge(
                _endpoint(match["src"]),
                _endpoint(match["dst"]),
                _conns(match["conns"].strip()),
            )
        )
    return edges


def _endpoint(text: str) -> Endpoint:
    if text.endswith("]") and "[" in text:
        return text[: text.index("[")]
    try:
        first, _, last = text.partition("-")
        start = ipaddress.IPv4Address(first)
        return (start, ipaddress.IPv4Address(last) if last else start)
    except ValueError as exc:
        raise NcaOutputError(f"unknown endpoint {text!r} in NCA output") from exc


def _conns(text: str) -> frozenset[Conn]:
    if text == "All connections":
        return ALL
    if text == "No connections":
        return frozenset()
    groups = _GROUP.findall(text)
    if not groups:
        raise NcaOutputError(f"unknown connection set {text!r} in NCA output")
    conns: set[Conn] = set()
    for group in groups:
        fields = dict(_field(part) for part in re.split(r",(?=\w+:)", group))
        unknown = set(fields) - {"protocols", "dst_ports"}
        if unknown or "protocols" not in fields:
            raise NcaOutputError(f"unknown connection set {text!r} in NCA output")
        ports = [(0, 65535)]
        if "dst_ports" in fields:
            ports = [_port_range(p) for p in fields["dst_ports"].split(",")]
        for protocol in fields["protocols"].split(","):
            conns |= {(protocol.strip(), lo, hi) for lo, hi in ports}
    return frozenset(conns)


def _field(part: str) -> tuple[str, str]:
    key, _, value = part.partition(":")
    return key.strip(), value.strip()


def _port_range(text: str) -> tuple[int, int]:
    first, _, last = text.strip().partition("-")
    return int(first), int(last or first)


@dataclass(frozen=True)
class NetworkExpectation:
    """The open arrows of one project (exactly these, with exactly these ports)."""

    arrows: Mapping[tuple[Endpoint, Endpoint], frozenset[Conn]]


def expected_arrows(project: str, settings: Settings) -> NetworkExpectation:
    """network_policies.py's four arrows, between the representative pods."""
    namespace = names.namespace_name(project)
    notebook = f"{namespace}/{NOTEBOOK_POD}"
    platform = platform_pods(settings)
    dns = frozenset({_tcp(53), ("UDP", 53, 53)})
    hub_api = frozenset({_tcp(settings.hub_api_port)})
    airlock = frozenset({_tcp(settings.airlock_port)})
    to_notebook = frozenset({_tcp(settings.notebook_port)})
    if settings.platform_host_ip is not None:
        host = ipaddress.IPv4Address(str(settings.platform_host_ip))
        return NetworkExpectation(
            {
                (notebook, (host, host)): dns | hub_api | airlock,
                ((host, host), notebook): to_notebook,
            }
        )
    return NetworkExpectation(
        {
            (notebook, platform.dns): dns,
            (notebook, platform.hub): hub_api,
            (notebook, platform.airlock): airlock,
            (platform.hub, notebook): to_notebook,
            (platform.proxy, notebook): to_notebook,
        }
    )


def _tcp(port: int) -> Conn:
    return ("TCP", port, port)


def _in(namespace: str, endpoint: Endpoint) -> bool:
    return isinstance(endpoint, str) and endpoint.startswith(f"{namespace}/")


def _show(endpoint: Endpoint) -> str:
    if isinstance(endpoint, str):
        return endpoint
    start, end = endpoint
    return str(start) if start == end else f"{start}-{end}"


def _show_conns(conns: frozenset[Conn]) -> str:
    if conns == ALL:
        return "all ports"
    return ",".join(f"{p}/{lo}" if lo == hi else f"{p}/{lo}-{hi}" for p, lo, hi in sorted(conns))


def _covers(conns: frozenset[Conn], protocol: str, port: int) -> bool:
    return any(p in ("*", protocol) and lo <= port <= hi for p, lo, hi in conns)


def _within(conn: Conn, allowed: frozenset[Conn]) -> bool:
    """Whether every port of `conn` is one of the `allowed` single ports (NCA merges
    neighbouring ports into ranges: 8080-8081)."""
    protocol, lo, hi = conn
    if protocol == "*":
        return False
    covered = {p for q, p, _ in allowed if q == protocol and lo <= p <= hi}
    return len(covered) == hi - lo + 1


def _contains(endpoint: Endpoint, address: ipaddress.IPv4Address) -> bool:
    return not isinstance(endpoint, str) and endpoint[0] <= address <= endpoint[1]


def judge_network(
    project: str,
    edges: Sequence[Edge],
    settings: Settings,
    apiserver: Sequence[tuple[ipaddress.IPv4Address, int]],
) -> list[Finding]:
    """The five network findings of one project from NCA's connectivity map."""
    namespace = names.namespace_name(project)
    mine = [e for e in edges if _in(namespace, e.src) or _in(namespace, e.dst)]
    egress = [e for e in mine if _in(namespace, e.src)]
    host = (
        ipaddress.IPv4Address(str(settings.platform_host_ip))
        if settings.platform_host_ip is not None
        else None
    )
    internet = [
        f"{_show(e.src)} -> {_show(e.dst)} ({_show_conns(e.conns)})"
        for e in egress
        if not isinstance(e.dst, str) and e.dst != (host, host)
    ]
    metadata = [
        f"{_show(e.src)} -> {_show(e.dst)} ({_show_conns(e.conns)})"
        for e in egress
        if _contains(e.dst, METADATA_ADDRESS)
    ]
    if not apiserver:
        api = ["the API server's address is unknown (no endpoints read), so this is unproven"]
    else:
        api = [
            f"{_show(e.src)} -> {address}:{port}"
            for e in egress
            for address, port in apiserver
            if _contains(e.dst, address) and _covers(e.conns, "TCP", port)
        ]
    cross = [
        f"{_show(e.src)} -> {_show(e.dst)} ({_show_conns(e.conns)})"
        for e in mine
        if isinstance(e.src, str)
        and isinstance(e.dst, str)
        and _other_project_or_outsider(
            e.src if _in(namespace, e.dst) else e.dst, namespace, settings
        )
    ]
    expected = expected_arrows(project, settings).arrows
    actual: dict[tuple[Endpoint, Endpoint], frozenset[Conn]] = {}
    for e in mine:
        actual[(e.src, e.dst)] = actual.get((e.src, e.dst), frozenset()) | e.conns
    paths = []
    for pair, conns in sorted(actual.items(), key=lambda kv: (_show(kv[0][0]), _show(kv[0][1]))):
        allowed = expected.get(pair, frozenset())
        extra = frozenset(c for c in conns if not _within(c, allowed))
        if extra:
            paths.append(f"unexpected {_show(pair[0])} -> {_show(pair[1])} ({_show_conns(extra)})")
    for pair, conns in sorted(expected.items(), key=lambda kv: (_show(kv[0][0]), _show(kv[0][1]))):
        missing = [c for c in conns if not _covers(actual.get(pair, frozenset()), c[0], c[1])]
        if missing:
            paths.append(
                f"missing {_show(pair[0])} -> {_show(pair[1])} ({_show_conns(frozenset(missing))})"
            )
    proven = "proven by network-config-analyzer on the live policies"
    return [
        finding("net-internet", project, internet, f"no egress outside the platform; {proven}"),
        finding("net-metadata", project, metadata, f"{METADATA_ADDRESS} unreachable; {proven}"),
        finding(
            "net-apiserver",
            project,
            api,
            "API server " + ", ".join(f"{a}:{p}" for a, p in apiserver) + f" unreachable; {proven}",
        ),
        finding("net-cross-project", project, cross, f"isolated from other namespaces; {proven}"),
        finding(
            "net-allowed-paths",
            project,
            paths,
            f"only the DNS, hub API, airlock and hub/proxy arrows, with their ports; {proven}",
        ),
    ]


def _other_project_or_outsider(endpoint: str, own_namespace: str, settings: Settings) -> bool:
    # Platform namespaces share the project prefix; arrows to their pods are judged by
    # net-allowed-paths, port by port.
    namespace = endpoint.split("/", maxsplit=1)[0]
    platform = names.platform_namespaces(settings) | {settings.dns_namespace}
    return namespace not in platform and namespace != own_namespace


def judge_network_unavailable(project: str, error: str) -> list[Finding]:
    """Every NCA-proven finding fails closed when NCA could not run."""
    return [
        Finding(check, project, False, f"unproven: network-config-analyzer failed: {error}")
        for check in NCA_CHECKS
    ]


def judge_policies_as_planned(
    project: str, live: Sequence[Manifest], settings: Settings
) -> Finding:
    """Structural comparison of the live NetworkPolicies with the planned ones: the same
    names with the same spec, and no other. It backs what NCA cannot express: which CNI
    enforces the policies, and how an implementation treats ipBlocks that cover pod IPs."""
    planned = {p["metadata"]["name"]: p["spec"] for p in network_policies(project, settings)}
    seen = {p["metadata"]["name"]: p.get("spec") or {} for p in live}
    problems = [f"missing {n}" for n in sorted(set(planned) - set(seen))]
    problems += [f"unplanned {n}" for n in sorted(set(seen) - set(planned))]
    problems += [
        f"{n} differs from the plan"
        for n in sorted(set(planned) & set(seen))
        if not _spec_equal(planned[n], seen[n])
    ]
    return finding(
        "net-as-planned",
        project,
        problems,
        f"{len(planned)} policies equal the plan (structural comparison, not an analysis)",
    )


def _spec_equal(planned: Any, live: Any) -> bool:
    # The API server fills in defaults (policyTypes, protocol TCP) that the plan states
    # anyway; lists are compared in order, as the plan is deterministic.
    return bool(_normal(planned) == _normal(live))


def _normal(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _normal(v) for k, v in value.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


# --- namespaces, foreign objects --------------------------------------------------------------


def judge_psa(project: str, namespace: Manifest | None, settings: Settings) -> Finding:
    if namespace is None:
        return Finding("psa-restricted", project, False, "the project namespace does not exist")
    labels = namespace["metadata"].get("labels") or {}
    want = {
        "pod-security.kubernetes.io/enforce": PSA_LEVEL,
        "pod-security.kubernetes.io/enforce-version": settings.psa_version,
    }
    problems = [
        f"label {k}={labels.get(k, '<unset>')}, should be {v}"
        for k, v in want.items()
        if labels.get(k) != v
    ]
    return finding(
        "psa-restricted", project, problems, f"enforce={PSA_LEVEL} {settings.psa_version}"
    )


def judge_foreign(
    project: str,
    foreign: Sequence[Manifest],
    pods: Sequence[Manifest],
    workspace: Workspace,
    phase: WorkspacePhase,
    desired: Sequence[Manifest],
) -> Finding:
    """NetworkPolicies and RoleBindings the controller did not make, and pods it would stop
    (the controller's own rule, `pods_to_stop`: one definition of a foreign pod)."""
    problems = [
        f"{o['kind']} {o['metadata']['name']} not made by the controller"
        for o in sorted(foreign, key=lambda o: (o["kind"], o["metadata"]["name"]))
        if o["kind"] in ("NetworkPolicy", "RoleBinding")
    ]
    problems += [f"pod {s.name}: {s.why}" for s in pods_to_stop(pods, workspace, phase, desired)]
    return finding(
        "no-foreign-objects", project, problems, f"{len(pods)} pods, all the hub's for members"
    )


# --- RBAC ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One SubjectAccessReview and the answer it must get."""

    check: str
    scope: str
    user: str
    groups: tuple[str, ...]
    verb: str
    resource: str
    namespace: str | None
    group: str = ""
    subresource: str = ""
    allowed: bool = False

    def review(self) -> Manifest:
        attributes = {"verb": self.verb, "resource": self.resource, "group": self.group}
        if self.namespace is not None:
            attributes["namespace"] = self.namespace
        if self.subresource:
            attributes["subresource"] = self.subresource
        return {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "metadata": {},
            "spec": {
                "user": self.user,
                "groups": list(self.groups),
                "resourceAttributes": attributes,
            },
        }

    def describe(self) -> str:
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        where = f" in {self.namespace}" if self.namespace else " cluster-wide"
        return f"{self.user} {self.verb} {what}{where}"


# (verb, resource, API group, subresource): what the probes ask about
_Ask = tuple[str, str, str, str]
_RBAC = "rbac.authorization.k8s.io"
_PODS: Final[_Ask] = ("create", "pods", "", "")
_EXEC: Final[_Ask] = ("create", "pods", "", "exec")
_GET_SECRETS: Final[_Ask] = ("get", "secrets", "", "")
_LIST_SECRETS: Final[_Ask] = ("list", "secrets", "", "")
_CLAIMS: Final[_Ask] = ("create", "persistentvolumeclaims", "", "")
# In a project namespace, none of the three may start pods by hand, exec into one, read a
# secret or make storage; the hub's pod rights come only from a Ready workspace's binding.
_DENIED_IN_PROJECT: Final = (_PODS, _EXEC, _GET_SECRETS, _LIST_SECRETS, _CLAIMS)


def rbac_probes(
    workspaces: Sequence[Workspace], phases: Mapping[str, WorkspacePhase], settings: Settings
) -> list[Probe]:
    """What each identity must and must not be allowed, per workspace and cluster-wide."""
    from provisioner import API_GROUP

    hub = names.hub_user(settings)
    controller = settings.controller_user
    export: _Ask = ("create", "exportrequests", API_GROUP, "")
    # people read exports only through the airlock (reviews under review stay hidden)
    read_exports: _Ask = ("get", "exportrequests", API_GROUP, "")
    probes: list[Probe] = []

    def ask(
        check: str, scope: str, user: str, namespace: str | None, rows: Iterable[tuple[_Ask, bool]]
    ) -> None:
        probes.extend(
            Probe(
                check,
                scope,
                user,
                ("system:authenticated",),
                verb,
                resource,
                namespace,
                group,
                sub,
                allowed,
            )
            for (verb, resource, group, sub), allowed in rows
        )

    for ws in workspaces:
        ns = names.namespace_name(ws.name)
        ready = phases.get(ws.name) is WorkspacePhase.READY
        denied = [(a, False) for a in _DENIED_IN_PROJECT]
        # members share one RoleBinding: one of them stands for all
        for member in ws.spec.members[:1]:
            ask(
                "rbac-researcher",
                ws.name,
                member,
                ns,
                [*denied, (export, ready), (read_exports, False)],
            )
        ask("rbac-hub", ws.name, hub, ns, [(_PODS, ready), *denied[1:]])
        # the controller makes the claims itself; pods, exec and secrets stay out of its reach
        ask("rbac-controller", ws.name, controller, ns, [d for d in denied if d[0] != _CLAIMS])
    writes = [(v, "workspaces", API_GROUP, "") for v in ("create", "update", "patch", "delete")]
    # people read requests and workspaces by name, only those that concern them (F20)
    lists = [("list", r, API_GROUP, "") for r in ("accessrequests", "workspaces")]
    for member in sorted({m for ws in workspaces for m in ws.spec.members[:1]}):
        ask("rbac-researcher", CLUSTER, member, None, [(w, False) for w in [*writes, *lists]])
    for namespace in (names.SYSTEM_NAMESPACE, "default"):
        ask("rbac-hub", CLUSTER, hub, namespace, [(_PODS, False)])
        ask("rbac-controller", CLUSTER, controller, namespace, [(_PODS, False)])
    ask("rbac-hub", CLUSTER, hub, None, [(_LIST_SECRETS, False)])
    ask(
        "rbac-controller",
        CLUSTER,
        controller,
        None,
        [
            (("create", "workspaces", API_GROUP, ""), True),
            (_LIST_SECRETS, False),
            # it writes the people's read grants (ClusterRoles and bindings, confined by
            # policies tre-controller-read-grant*), but binds no ClusterRole it does not hold
            (("bind", "clusterroles", _RBAC, ""), False),
            (("escalate", "clusterroles", _RBAC, ""), False),
        ],
    )
    ask("rbac-airlock", CLUSTER, settings.airlock_user, None, _airlock_reach(API_GROUP))
    ask("rbac-airlock", CLUSTER, settings.airlock_user, names.SYSTEM_NAMESPACE, [(_PODS, False)])
    return probes


def _airlock_reach(api_group: str) -> list[tuple[_Ask, bool]]:
    """The airlock's constrained impersonation (planning/rbac.py), asked the way the API
    server asks when it impersonates: whom (`impersonate:<mode>`), then what
    (`impersonate-on:<mode>:<verb>`)."""
    people = "authentication.k8s.io"
    return [
        (("impersonate:user-info", "users", people, ""), True),
        # legacy impersonation: anyone, for anything
        (("impersonate", "users", "", ""), False),
        (("impersonate", "groups", "", ""), False),
        (("impersonate:serviceaccount", "serviceaccounts", people, ""), False),
        (("impersonate:arbitrary-node", "nodes", people, ""), False),
        # groups only by name (the output checkers'): not every group
        (("impersonate:user-info", "groups", people, ""), False),
        (("impersonate:user-info", "userextras", people, ""), False),
        (("impersonate-on:user-info:create", "exportrequests", api_group, ""), True),
        (("impersonate-on:user-info:delete", "exportrequests", api_group, ""), False),
        (("impersonate-on:user-info:patch", "exportrequests", api_group, "status"), False),
        (("impersonate-on:user-info:create", "pods", "", ""), False),
        (("impersonate-on:user-info:get", "secrets", "", ""), False),
        (("patch", "exportrequests", api_group, "status"), True),
        (_LIST_SECRETS, False),
        (("create", "clusterrolebindings", _RBAC, ""), False),
    ]


def judge_rbac(answers: Iterable[tuple[Probe, bool | str]]) -> list[Finding]:
    """One finding per (check, scope): every probe answered as it must. An answer that is a
    string is an error from the API server: the probe is unproven, so it fails."""
    grouped: dict[tuple[str, str], list[str]] = {}
    counts: dict[tuple[str, str], int] = {}
    for probe, answer in answers:
        key = (probe.check, probe.scope)
        problems = grouped.setdefault(key, [])
        counts[key] = counts.get(key, 0) + 1
        if isinstance(answer, str):
            problems.append(f"{probe.describe()}: review failed: {answer}")
        elif answer is not probe.allowed:
            problems.append(
                f"{probe.describe()}: {'allowed' if answer else 'denied'}, must be "
                f"{'allowed' if probe.allowed else 'denied'}"
            )
    return [
        finding(
            check,
            scope,
            grouped[(check, scope)],
            f"{counts[(check, scope)]} SubjectAccessReviews answered as required",
        )
        for check, scope in sorted(grouped)
    ]


# --- the kubelet's API ------------------------------------------------------------------------

# Node subresources that reach what the kubelet serves from inside pods, past every pod-level
# admission rule (`tre-pod-no-exec` judges pods/exec, not the kubelet): `proxy` is the API
# server's proxy to the kubelet (`/exec`, `/run`, `/attach`, `/portForward`; `get` suffices
# over a WebSocket), and a token holding `log` or `checkpoint` is answered by the kubelet
# itself (its `/logs/` serves the containers' log files, a checkpoint dumps a container's
# memory). Metrics and stats carry no data of a workspace.
KUBELET_DATA_SUBRESOURCES: Final = ("proxy", "log", "checkpoint")
_REACHING_VERBS: Final = frozenset({"get", "create", "update", "patch", "delete", "*"})
# The cluster's own control plane: `system:masters` (the API server's client to kubelets on
# most distributions; it passes every authorizer anyway), the API server's kubelet client
# under the names kubeadm and hand-made clusters give it, and the two kube-controller-manager
# controllers whose built-in roles hold every verb they need on `*` (the namespace controller
# and the garbage collector delete anything, and `*` takes in nodes/proxy).
CONTROL_PLANE_SUBJECTS: Final = frozenset(
    {
        ("Group", "system:masters"),
        ("User", "kube-apiserver-kubelet-client"),
        ("User", "system:kube-apiserver"),
        ("ServiceAccount", "kube-system/namespace-controller"),
        ("ServiceAccount", "kube-system/generic-garbage-collector"),
    }
)


def kubelet_data_rules(role: Manifest) -> list[str]:
    """The node subresources in `KUBELET_DATA_SUBRESOURCES` a ClusterRole's rules grant with
    a verb that reaches the kubelet, as RBAC matches them (`*` groups, resources, verbs;
    `nodes/*`, `*/proxy`); resourceNames still grant it for those nodes."""
    granted: set[str] = set()
    for rule in role.get("rules") or []:
        if not {"", "*"} & set(rule.get("apiGroups") or []):
            continue
        if not _REACHING_VERBS & set(rule.get("verbs") or []):
            continue
        resources = set(rule.get("resources") or [])
        for sub in KUBELET_DATA_SUBRESOURCES:
            if resources & {"*", "nodes/*", f"*/{sub}", f"nodes/{sub}"}:
                granted.add(f"nodes/{sub}")
    return sorted(granted)


def judge_kubelet_api(
    cluster_roles: Sequence[Manifest], cluster_role_bindings: Sequence[Manifest]
) -> Finding:
    """Fails naming every subject outside `CONTROL_PLANE_SUBJECTS` that a ClusterRoleBinding
    gives a node subresource reaching the kubelet's data. (A RoleBinding grants nothing on
    nodes, which are cluster-scoped.)"""
    grants = {r["metadata"]["name"]: kubelet_data_rules(r) for r in cluster_roles}
    problems = []
    for binding in sorted(cluster_role_bindings, key=lambda b: str(b["metadata"]["name"])):
        ref = binding.get("roleRef") or {}
        granted = grants.get(ref.get("name", "")) if ref.get("kind") == "ClusterRole" else None
        if not granted:
            continue
        for subject in binding.get("subjects") or []:
            kind, name = subject.get("kind", ""), subject.get("name", "")
            who = f"{subject.get('namespace')}/{name}" if kind == "ServiceAccount" else name
            if (kind, who) in CONTROL_PLANE_SUBJECTS:
                continue
            problems.append(
                f"{kind} {who} holds {', '.join(granted)} (ClusterRoleBinding "
                f"{binding['metadata']['name']}, ClusterRole {ref['name']}): it can run "
                "commands in and read notebooks through the kubelet, past tre-pod-no-exec; "
                "remove the binding"
            )
    return finding(
        "rbac-kubelet-api",
        CLUSTER,
        problems,
        f"no subject but the control plane holds {', '.join(KUBELET_DATA_SUBRESOURCES)} on "
        f"nodes ({len(cluster_role_bindings)} ClusterRoleBindings read)",
    )


# --- datasets --------------------------------------------------------------------------------


def judge_datasets(
    workspace: Workspace,
    pvs: Mapping[str, Manifest],
    claims: Mapping[str, Manifest],
    pods: Sequence[Manifest],
) -> Finding:
    """Every dataset of the spec read-only at every layer: the PV's source and access mode,
    its reservation for exactly the project's claim, the claim's binding to exactly that PV,
    and every pod volume of a dataset claim. `claims`: the namespace's PVCs by name."""
    project = workspace.name
    ns = names.namespace_name(project)
    problems: list[str] = []
    dataset_claims = set()
    for dataset in workspace.spec.datasets:
        pv_name = names.dataset_pv_name(project, dataset.name)
        pvc_name = names.dataset_pvc_name(dataset.name)
        dataset_claims.add(pvc_name)
        pv = pvs.get(pv_name)
        if pv is None:
            problems.append(f"PV {pv_name} of dataset {dataset.name} is missing")
        else:
            spec = pv.get("spec") or {}
            source = spec.get("csi") or spec.get("nfs")
            if source is None or source.get("readOnly") is not True:
                problems.append(f"PV {pv_name}: volume source is not readOnly")
            if spec.get("accessModes") != ["ReadOnlyMany"]:
                problems.append(f"PV {pv_name}: accessModes {spec.get('accessModes')}")
            ref = spec.get("claimRef") or {}
            if (ref.get("namespace"), ref.get("name")) != (ns, pvc_name):
                problems.append(
                    f"PV {pv_name}: reserved for {ref.get('namespace')}/{ref.get('name')}, "
                    f"not {ns}/{pvc_name}"
                )
        pvc = claims.get(pvc_name)
        if pvc is None:
            problems.append(f"PVC {pvc_name} of dataset {dataset.name} is missing")
        elif (pvc.get("spec") or {}).get("volumeName") != pv_name:
            problems.append(f"PVC {pvc_name}: bound to {pvc['spec'].get('volumeName')}")
    for name, pvc in sorted(claims.items()):
        labels = pvc["metadata"].get("labels") or {}
        if names.LABEL_DATASET in labels and name not in dataset_claims:
            problems.append(f"PVC {name}: dataset {labels[names.LABEL_DATASET]} not in the spec")
    for pod in pods:
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            ref = volume.get("persistentVolumeClaim") or {}
            if ref.get("claimName") in dataset_claims and ref.get("readOnly") is not True:
                problems.append(
                    f"pod {pod['metadata']['name']}: mounts {ref['claimName']} writable"
                )
    return finding(
        "datasets-read-only",
        project,
        problems,
        f"{len(workspace.spec.datasets)} datasets read-only (PV source, ROX, claimRef, pods)",
    )


def judge_audit(problems: Sequence[str], entries: int | None) -> Finding:
    return finding(
        "audit-chain", CLUSTER, problems, f"{entries} entries, chain and signatures verify"
    )


# The hub's evaluation sign-in (chart value hub.evaluationPasswordSecret): one shared password
# makes anyone who knows it anyone, so no access rule that names a person holds.
SHARED_PASSWORD_ENV: Final = "TRE_HUB_DEV_AUTHENTICATOR"  # noqa: S105 - a variable name


def judge_hub_sign_in(namespace: str, deployments: Sequence[Manifest]) -> Finding:
    """Fails when a Deployment in the hub's namespace runs a container with the shared-password
    sign-in switched on. A hub outside the cluster (`tre dev up`'s) is not visible here."""
    problems = [
        f"{namespace}/{d['metadata']['name']}: container {c['name']} signs people in with one "
        "shared password (hub.evaluationPasswordSecret); set the hubOidc* settings instead"
        for d in deployments
        for c in d["spec"]["template"]["spec"].get("containers") or []
        for e in c.get("env") or []
        if e.get("name") == SHARED_PASSWORD_ENV and str(e.get("value", "")).lower() == "true"
    ]
    ok = (
        f"{len(deployments)} Deployment(s) in {namespace}, none with a shared-password sign-in"
        if deployments
        else f"no hub Deployment in {namespace} (a hub outside the cluster is not checked)"
    )
    return finding("hub-sign-in", CLUSTER, problems, ok)


def passed(findings: Iterable[Finding]) -> bool:
    return all(f.passed for f in findings)


# --- the platform's buckets are no dataset's source (a dry run each) ---------------------------

# The Dataset `tre check` creates as a server-side dry run, once per platform bucket: the
# whole bucket, at the highest tier (so no overlap rule can refuse it first).
PLATFORM_BUCKET_PROBE: Final = "tre-check-platform-bucket"


def platform_bucket_datasets(settings: Settings) -> dict[str, Manifest]:
    """Per platform bucket (`settings.platform_buckets`), a Dataset reading all of it."""
    return {
        bucket: Dataset(
            name=PLATFORM_BUCKET_PROBE,
            spec=DatasetSpec(
                title="tre check: a platform bucket must never be a dataset",
                steward="tre-check",
                classification=max(ClassificationTier, key=lambda t: t.rank),
                source=DatasetSource(s3=S3Source(bucket=bucket)),
            ),
        ).to_object()
        for bucket in settings.platform_buckets
    }


def judge_platform_buckets(answers: Mapping[str, str | None]) -> Finding:
    """`answers`: per bucket, the API server's refusal of its dry-run Dataset, or None when it
    was admitted. Passes when each was refused as a platform bucket; a refusal for another
    reason proves nothing about this rule."""
    problems = []
    for bucket, refusal in sorted(answers.items()):
        if refusal is None:
            problems.append(
                f"a dataset reading all of {bucket} was admitted (server-side dry run): policy "
                "tre-dataset-not-platform-bucket is missing, unbound or does not list it"
            )
        elif PLATFORM_BUCKET_REFUSAL not in refusal:
            problems.append(f"{bucket}: unproven, refused for another reason: {refusal}")
    ok = (
        f"a dataset on each platform bucket ({', '.join(sorted(answers))}) is refused by the "
        "API server (server-side dry run)"
    )
    return finding("dataset-platform-buckets", CLUSTER, problems, ok)


# --- whom the installed policies exempt ---------------------------------------------------------

_KUBE_SYSTEM_ACCOUNT = re.compile(r"system:serviceaccount:kube-system:[a-z0-9.-]+")


def admission_exemptions(policies: Iterable[Manifest]) -> dict[str, list[str]]:
    """Every kube-system ServiceAccount named in the platform's admission policies (always
    to exempt it from a rule: `CLUSTER_CONTROLLER_WRITES` in admission.py), with the
    policies that name it."""
    found: dict[str, set[str]] = {}
    for policy in policies:
        text = json.dumps(policy.get("spec") or {})
        for account in set(_KUBE_SYSTEM_ACCOUNT.findall(text)):
            found.setdefault(account, set()).add(policy["metadata"]["name"])
    return {account: sorted(found[account]) for account in sorted(found)}


def judge_exemptions(
    live: Mapping[str, Sequence[str]], planned: Mapping[str, Sequence[str]]
) -> Finding:
    """Lists, for an operator, each kube-system account the installed policies exempt and
    where; fails for an exemption the platform does not plan (an edited policy)."""
    problems = [
        f"{account} is exempt in {', '.join(sorted(set(where) - set(planned.get(account, ()))))}"
        ", which the platform does not plan (a policy edited after install?)"
        for account, where in live.items()
        if set(where) - set(planned.get(account, ()))
    ]
    shown = "; ".join(
        f"{account.rsplit(':', 1)[1]} ({', '.join(where)})" for account, where in live.items()
    )
    return finding(
        "admission-exemptions",
        CLUSTER,
        problems,
        f"kube-system accounts exempt by name, each only for its own writes: {shown or 'none'}",
    )
