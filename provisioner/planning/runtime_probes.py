"""`tre check --probe-from-pods`: the probe pods, what they try, and the verdicts (pure).

Where the cluster has a Ready node, `tre check` proves isolation by real connection attempts
as well as by analysis: in every probed workspace it runs a *listener* pod, then a *prober*
pod that tries, in parallel with short timeouts, every path below and reports what happened
(`provisioner/compliance/probe_script.py`). Both pods are notebooks to the workspace: the
labels, resolver, security context and image of `notebook_pods`, so the workspace's own
NetworkPolicies judge them exactly as they judge a researcher's server.

    must fail     every API server address (`report.apiserver_addresses`, loopback aside: in
                  a pod that is the pod itself), each `--outside ADDR:PORT` the operator
                  names, every Ready node's kubelet (InternalIP:10250), the platform's S3
                  (`TRE_S3_ENDPOINT_URL`'s address when an IPv4 one, and on every Ready
                  node's InternalIP its port, 80 and 443, where a relay or a node-local
                  server would serve it to pods, as the dev node's relay does), and the
                  listener of every other probed workspace (on the notebook port, which the
                  hub and proxy may reach and nothing else);
    must succeed  the hub API (the one allowed arrow that answers: the positive control, for
                  a pod that reaches nothing proves nothing) and DNS: the platform's resolver
                  answers the hub's Service name and NXDOMAIN for OUTSIDE_NAME, asked of the
                  resolver alone.

There is no default outside target: this platform never sends a packet to an address nobody
chose. Each finding fails, naming why, when its evidence is missing: no Ready node, a pod not
running within the bound, no result, or a failed positive control.

Who creates the pods: the pod admission policy (`tre-pod-workspace-access`) admits pods in a
project namespace only from the hub's ServiceAccount, only for a member of a Ready workspace.
`tre check` does not weaken it: the admin's client impersonates the hub (the API server's
audit log records both names) and the pod names the workspace's first member, as every pod
there must. It also carries the admin's name (names.ANNOTATION_CHECK_PROBE_BY) and the check
labels. The controller audits it like any pod in a workspace, with no exemption the hub could
borrow: an admin's pod in a workspace belongs in the audit log, as `notebook.started` for that
member with `checkProbeBy` naming the admin (the annotation is the creator's word, like the
user annotation; the API server's audit log has who really created it).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from provisioner.models.settings import Settings
from provisioner.planning import names, notebook_pods
from provisioner.planning.compliance import Finding, Manifest, finding

# A name every public resolver answers (RFC 2606 keeps it for documentation, and it has
# records): a resolver that forwards answers it, the platform's must say NXDOMAIN.
OUTSIDE_NAME: Final = "example.com"
KUBELET_PORT: Final = 10250
# S3's ports over HTTP and HTTPS, tried on every node besides the endpoint's own port
S3_PORTS: Final = (80, 443)
CONNECT_TIMEOUT_SECONDS: Final = 2.0
# kube-router filters a new pod's traffic only once it has seen the pod's address, a fraction
# of a second after the container starts (measured on the local node: probers that tried at
# once reached the kubelet in 5 of 36 pods over six runs). A connection that succeeds is tried
# again until this long after the prober's start; one that then fails passes, with the window
# named in the detail; one that still connects fails.
SETTLE_SECONDS: Final = 10.0  # it costs time only when a path is open
# Pods end themselves after this even if `tre check` is killed before it deletes them.
POD_LIFETIME_SECONDS: Final = 600
LISTENER: Final = "listen"
PROBER: Final = "probe"
LABEL_CHECK_PROBE: Final = names.LABEL_CHECK_PROBE  # LISTENER or PROBER
LABEL_CHECK_RUN: Final = names.LABEL_CHECK_RUN  # one run of `tre check`
# Small and equal memory request and limit (the compute tiers' rule); the quota needs both.
PROBE_RESOURCES: Final = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "250m", "memory": "64Mi"},
}

# the runtime findings, in report order
RUNTIME_CHECKS: Final = (
    "runtime-hub-api",
    "runtime-dns",
    "runtime-apiserver",
    "runtime-outside",
    "runtime-kubelet",
    "runtime-s3",
    "runtime-cross-project",
)
# must-fail checks whose verdict needs the positive control to have passed
_NEGATIVE: Final = ("runtime-apiserver", "runtime-outside", "runtime-kubelet", "runtime-s3")

Address = tuple[ipaddress.IPv4Address, int]


def parse_outside(text: str) -> Address:
    """`--outside ADDR:PORT`: an IPv4 address and a TCP port (the policies and the probes are
    IPv4; a host name would need a resolver the pods must not have)."""
    host, sep, port = text.rpartition(":")
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        address = None
    if not sep or address is None or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"--outside {text!r}: expected ADDR:PORT, an IPv4 address and a TCP port "
            "(e.g. 169.254.169.254:80)"
        )
    if address.is_loopback or address.is_unspecified:
        raise ValueError(
            f"--outside {text!r}: {address} is the probe pod itself, not outside the cluster"
        )
    return address, int(port)


@dataclass(frozen=True)
class Node:
    name: str
    address: ipaddress.IPv4Address
    kubelet_port: int


def ready_nodes(nodes: Sequence[Manifest]) -> list[Node]:
    """Nodes whose Ready condition is True, with their InternalIP and kubelet port."""
    found = []
    for node in nodes:
        status = node.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        internal = [
            a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"
        ]
        addresses = [a for a in map(_ipv4, internal) if a is not None]
        if ready and addresses:
            endpoint = (status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}
            port = int(endpoint.get("Port") or KUBELET_PORT)
            found.append(Node(node["metadata"]["name"], addresses[0], port))
    return sorted(found, key=lambda n: n.name)


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Connect:
    """One TCP connection a prober tries; `label` is its id in the results and the detail."""

    check: str
    label: str
    host: str
    port: int


@dataclass(frozen=True)
class ProbePlan:
    """What one workspace's prober tries."""

    project: str
    connects: tuple[Connect, ...]
    hub_url: str
    dns_server: str | None
    hub_name: str
    # other workspaces' listeners this prober tries: project -> label
    peers: Mapping[str, str] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        """The probe script's spec (probe_script.py documents it)."""
        dns = []
        if self.dns_server is not None:
            dns = [
                {"id": f"dns {self.hub_name}", "server": self.dns_server, "name": self.hub_name},
                {"id": f"dns {OUTSIDE_NAME}", "server": self.dns_server, "name": OUTSIDE_NAME},
            ]
        return {
            "mode": "probe",
            "timeout": CONNECT_TIMEOUT_SECONDS,
            "settle": SETTLE_SECONDS,
            "connect": [{"id": c.label, "host": c.host, "port": c.port} for c in self.connects],
            "http": [{"id": self.hub_label, "url": self.hub_url}],
            "dns": dns,
        }

    @property
    def hub_label(self) -> str:
        return f"hub API {self.hub_url}"


def plan_probes(
    projects: Sequence[str],
    listeners: Mapping[str, str],
    settings: Settings,
    apiserver: Sequence[Address],
    outside: Sequence[Address],
    nodes: Sequence[Node],
) -> dict[str, ProbePlan]:
    """Each project's prober plan. `listeners`: project -> its listener pod's IP (for the
    projects whose listener runs)."""
    base = [
        Connect("runtime-apiserver", f"API server {a}:{p}", str(a), p)
        for a, p in apiserver
        if not a.is_loopback
    ]
    base += [Connect("runtime-outside", f"outside {a}:{p}", str(a), p) for a, p in outside]
    base += [
        Connect(
            "runtime-kubelet",
            f"kubelet {n.name} {n.address}:{n.kubelet_port}",
            str(n.address),
            n.kubelet_port,
        )
        for n in nodes
    ]
    base += s3_targets(settings, nodes)
    hub_url = notebook_pods.hub_connect_url(settings).rstrip("/") + "/hub/api/"
    dns = str(settings.dns_resolver_ip) if settings.dns_resolver_ip is not None else None
    hub_name = names.service_fqdn(names.HUB_SERVICE, settings.hub_namespace)
    plans = {}
    for project in projects:
        peers = {
            other: f"workspace {other} {ip}:{settings.notebook_port}"
            for other, ip in sorted(listeners.items())
            if other != project
        }
        cross = [
            Connect("runtime-cross-project", label, listeners[other], settings.notebook_port)
            for other, label in peers.items()
        ]
        plans[project] = ProbePlan(project, (*base, *cross), hub_url, dns, hub_name, peers)
    return plans


def s3_targets(settings: Settings, nodes: Sequence[Node]) -> list[Connect]:
    """The platform's S3 as a notebook could try it: the endpoint's own address (when it is
    an IPv4 one and not loopback), and on every Ready node's address the endpoint's port and
    S3's usual ports (S3_PORTS: where a relay or a node-local server serves it to pods, as on
    the dev node). The cloud's S3 is outside: runtime-outside and net-internet cover it."""
    targets: dict[tuple[str, int], str] = {}
    ports = set(S3_PORTS)
    # scheme, host and port of the endpoint (planning does no I/O, so no urllib: the
    # setting's pattern already keeps it one http(s) URL)
    url = re.match(r"(https?)://([^/:?#]+)(?::(\d+))?", settings.s3_endpoint_url or "")
    if url is not None:
        scheme, host, explicit = url.groups()
        port = int(explicit) if explicit else (443 if scheme == "https" else 80)
        ports.add(port)
        endpoint = _ipv4(host)
        if endpoint is not None and not endpoint.is_loopback:
            targets[(str(endpoint), port)] = f"S3 {endpoint}:{port}"
    for n in nodes:
        for p in sorted(ports):
            targets.setdefault((str(n.address), p), f"S3 on node {n.name} {n.address}:{p}")
    return [Connect("runtime-s3", label, host, p) for (host, p), label in targets.items()]


def listener_spec(settings: Settings) -> dict[str, Any]:
    return {"mode": "listen", "port": settings.notebook_port, "seconds": POD_LIFETIME_SECONDS}


def probe_pod_name(role: str, run_id: str) -> str:
    return f"tre-check-{role}-{run_id}"


def probe_pod(
    project: str,
    member: str,
    role: str,
    spec: Mapping[str, Any],
    *,
    script: str,
    run_id: str,
    operator: str,
    settings: Settings,
) -> Manifest:
    """A probe pod of `project`: a notebook to the namespace's policies, admitted for `member`
    (the admission policy's rule), running `script` with `spec` under `restricted`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": probe_pod_name(role, run_id),
            "namespace": names.namespace_name(project),
            "labels": {
                **notebook_pods.notebook_labels(project),
                LABEL_CHECK_PROBE: role,
                LABEL_CHECK_RUN: run_id,
            },
            "annotations": {
                names.ANNOTATION_USER: member,
                names.ANNOTATION_CHECK_PROBE_BY: operator,
            },
        },
        "spec": {
            "restartPolicy": "Never",
            # a notebook gets no token either: the pod has no business with the API
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "activeDeadlineSeconds": POD_LIFETIME_SECONDS,
            "securityContext": notebook_pods.pod_security_context(),
            **notebook_pods.notebook_dns(settings),
            "containers": [
                {
                    "name": "probe",
                    "image": notebook_pods.NOTEBOOK_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", script, json.dumps(spec, sort_keys=True)],
                    "securityContext": notebook_pods.container_security_context(),
                    "resources": json.loads(json.dumps(PROBE_RESOURCES)),
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }
            ],
        },
    }


def parse_results(message: str) -> dict[str, dict[str, Any]]:
    """A prober's termination message; ValueError when it is not the script's JSON."""
    try:
        data = json.loads(message)
    except ValueError as exc:
        raise ValueError(f"the probe's report is not JSON ({exc}): {message[:200]!r}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"the probe's report is not a map of results: {message[:200]!r}")
    return data


# A project's outcome: the prober's results, or why there are none.
Outcome = Mapping[str, Mapping[str, Any]] | str


def judge_runtime(plans: Mapping[str, ProbePlan], outcomes: Mapping[str, Outcome]) -> list[Finding]:
    """The runtime findings of every planned project, from every prober's results (the
    cross-project finding of a workspace reads the other probers' attempts on its
    listener)."""
    findings = []
    for project, plan in sorted(plans.items()):
        outcome = outcomes.get(project, "no probe ran")
        if isinstance(outcome, str):
            findings += unproven(project, outcome)
            continue
        control = _hub_api(plan, outcome)
        findings += [
            control,
            _dns(plan, outcome),
            *(_negative(check, plan, outcome, control) for check in _NEGATIVE),
            _cross(project, plans, outcomes, control),
        ]
    return findings


def unproven(project: str, why: str) -> list[Finding]:
    """Every runtime finding of `project` fails: no evidence is not a pass."""
    return [Finding(check, project, False, f"unproven: {why}") for check in RUNTIME_CHECKS]


def _hub_api(plan: ProbePlan, results: Mapping[str, Mapping[str, Any]]) -> Finding:
    result = results.get(plan.hub_label) or {"error": "no result"}
    if result.get("status") == 200:
        return Finding("runtime-hub-api", plan.project, True, f"{plan.hub_label}: HTTP 200")
    what = f"HTTP {result['status']}" if "status" in result else result.get("error")
    return Finding(
        "runtime-hub-api",
        plan.project,
        False,
        f"{plan.hub_label}: {what}; the one arrow that must answer did not, so the probes "
        "that must fail prove nothing",
    )


def _dns(plan: ProbePlan, results: Mapping[str, Mapping[str, Any]]) -> Finding:
    if plan.dns_server is None:
        return Finding(
            "runtime-dns",
            plan.project,
            False,
            "unproven: TRE_DNS_RESOLVER_IP is unset, so notebooks have no resolver to ask",
        )
    hub = results.get(f"dns {plan.hub_name}") or {"error": "no result"}
    outside = results.get(f"dns {OUTSIDE_NAME}") or {"error": "no result"}
    problems = []
    if not (hub.get("rcode") == 0 and hub.get("answers", 0) > 0):
        problems.append(f"{plan.hub_name} not answered by {plan.dns_server}: {_dns_show(hub)}")
    if outside.get("rcode") != 3:
        problems.append(
            f"{OUTSIDE_NAME} must be NXDOMAIN at {plan.dns_server}, got {_dns_show(outside)}"
        )
    return finding(
        "runtime-dns",
        plan.project,
        problems,
        f"{plan.dns_server} answers {plan.hub_name} and NXDOMAIN for {OUTSIDE_NAME}",
    )


def _dns_show(result: Mapping[str, Any]) -> str:
    if "error" in result:
        return str(result["error"])
    rcode = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}.get(
        result.get("rcode", -1), f"rcode {result.get('rcode')}"
    )
    return f"{rcode} with {result.get('answers', 0)} answers"


def _negative(
    check: str, plan: ProbePlan, results: Mapping[str, Mapping[str, Any]], control: Finding
) -> Finding:
    targets = [c for c in plan.connects if c.check == check]
    if not targets:
        why = {
            "runtime-apiserver": "no non-loopback API server address is known",
            "runtime-outside": "no --outside target",
            "runtime-kubelet": "no Ready node",
            "runtime-s3": "no Ready node, and TRE_S3_ENDPOINT_URL names no IPv4 address",
        }[check]
        return Finding(check, plan.project, False, f"unproven: {why}")
    problems = _connected(targets, results)
    if not problems and not control.passed:
        return Finding(
            check,
            plan.project,
            False,
            "unproven: nothing connected, but neither did the hub API (runtime-hub-api)",
        )
    if problems:
        return finding(check, plan.project, problems, "")
    refused = ", ".join(_refused(c, results) for c in targets)
    return Finding(
        check,
        plan.project,
        True,
        f"no connection from a notebook-labelled pod to {refused}; the hub API answered",
    )


def _refused(target: Connect, results: Mapping[str, Mapping[str, Any]]) -> str:
    result = results[target.label]
    shown = f"{target.label} ({result.get('error') or 'refused'})"
    if "open_for" in result:
        shown += (
            f" [but reachable in the first {result['open_for']}s after the pod started, "
            "before the CNI applied its policy]"
        )
    return shown


def _connected(targets: Sequence[Connect], results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    problems = []
    for target in targets:
        result = results.get(target.label)
        if result is None or "connected" not in result:
            problems.append(f"{target.label}: no result")
        elif result["connected"] is not False:
            problems.append(f"{target.label}: connected")
    return problems


def _cross(
    project: str,
    plans: Mapping[str, ProbePlan],
    outcomes: Mapping[str, Outcome],
    control: Finding,
) -> Finding:
    """From this workspace's prober to the others' listeners, and from theirs to its own."""
    plan = plans[project]
    problems: list[str] = []
    own = outcomes[project]
    # (who tried, the target, their results): this prober's, then the others' on its listener
    attempts: list[tuple[str, Connect, Mapping[str, Mapping[str, Any]]]] = []
    if not isinstance(own, str):
        targets = [c for c in plan.connects if c.check == "runtime-cross-project"]
        attempts += [(project, c, own) for c in targets]
    for other, other_plan in sorted(plans.items()):
        theirs = outcomes.get(other)
        label = other_plan.peers.get(project)
        if other == project or label is None or theirs is None or isinstance(theirs, str):
            continue
        attempts += [(other, c, theirs) for c in other_plan.connects if c.label == label]
    for who, target, results in attempts:
        problems += [f"{who} -> {p}" for p in _connected([target], results)]
    tried = [f"{who} -> {target.label}" for who, target, _ in attempts]
    if not tried:
        return Finding(
            "runtime-cross-project",
            project,
            False,
            "unproven: no other workspace's probe pod ran; probe two or more Ready "
            "workspaces (without --project, or name another)",
        )
    if not problems and not control.passed:
        return Finding(
            "runtime-cross-project",
            project,
            False,
            "unproven: nothing connected, but neither did the hub API (runtime-hub-api)",
        )
    if problems:
        return finding("runtime-cross-project", project, problems, "")
    refused = "; ".join(f"{who} -> {_refused(t, results)}" for who, t, results in attempts)
    return Finding(
        "runtime-cross-project",
        project,
        True,
        f"no connection: {refused}; the hub API answered",
    )


@dataclass(frozen=True)
class PodProgress:
    """Where a probe pod is: `ended` with its termination message, `running` at `ip`, or
    neither, with what keeps it (`waiting`: the scheduler's or the kubelet's reason)."""

    running: bool
    ended: bool
    ip: str | None
    message: str
    waiting: str


def pod_progress(pod: Manifest) -> PodProgress:
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    container = (status.get("containerStatuses") or [{}])[0]
    state = container.get("state") or {}
    terminated = state.get("terminated") or {}
    why = [
        f"{c.get('reason')}: {c.get('message')}"
        for c in status.get("conditions") or []
        if c.get("status") == "False" and c.get("reason")
    ]
    waiting = state.get("waiting") or {}
    if waiting.get("reason"):
        why.append(f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": "))
    if status.get("reason"):  # DeadlineExceeded, Evicted
        why.append(f"{status['reason']}: {status.get('message', '')}".rstrip(": "))
    ended = phase in ("Succeeded", "Failed")
    return PodProgress(
        running=phase == "Running" and "running" in state and bool(status.get("podIP")),
        ended=ended,
        ip=status.get("podIP"),
        message=str(terminated.get("message") or ""),
        waiting="; ".join(why) or f"phase {phase}",
    )
