"""`tre check`'s I/O: read the cluster once, run NCA once, ask the access reviews, judge.

The reads are the controller's own (`read_snapshot`: one LIST per kind for the whole
cluster, never a GET per workspace), plus the API server's EndpointSlice. The judgements are
the pure functions of `provisioner.planning.compliance`. The SubjectAccessReviews are one
POST each (there is no batch form) and go out over a few connections in parallel. With
`runtime` (`tre check --probe-from-pods`), the probe pods of `runtime.py` run after the
analysis, in the Ready workspaces checked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from provisioner.compliance import nca
from provisioner.compliance.runtime import RuntimeProbes, runtime_findings
from provisioner.controller.install import plan_platform
from provisioner.controller.reconcile import read_snapshot
from provisioner.errors import TreError
from provisioner.kube.api import Kube, Manifest
from provisioner.kube.resources import (
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    DEPLOYMENTS,
    ENDPOINT_SLICES,
    RESOURCES,
    SERVICES,
)
from provisioner.models.resources import Workspace, WorkspacePhase
from provisioner.models.settings import Settings
from provisioner.planning import compliance, names
from provisioner.planning.project import Snapshot
from provisioner.planning.workspace import plan_for_phase

REVIEW_CONNECTIONS = 4
POLICIES = RESOURCES[("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy")]


@dataclass(frozen=True)
class Report:
    findings: list[compliance.Finding]
    workspaces: int

    @property
    def passed(self) -> bool:
        return compliance.passed(self.findings)


# The audit chain is checked by the caller's function (it needs S3): None when S3 is not
# configured, else (problems, entries).
AuditVerifier = Callable[[], tuple[list[str], int]]


def check_cluster(
    connect: Callable[[], Kube],
    settings: Settings,
    audit: AuditVerifier | None,
    projects: Collection[str] = (),
    runtime: RuntimeProbes | None = None,
) -> Report:
    """Every finding for the cluster `connect()` reaches, as the identity it connects as
    (it must be able to list everything and create SubjectAccessReviews: an admin).
    `projects`: only these workspaces (all when empty); the cluster-wide checks always run.
    `runtime`: also probe from short-lived pods in every Ready workspace (runtime.py)."""
    kube = connect()
    snapshot = read_snapshot(kube)
    findings: list[compliance.Finding] = [
        compliance.Finding("no-foreign-objects", u.name, False, f"unparsable {u.kind}: {u.error}")
        for u in snapshot.unparsable
        if u.kind == "Workspace"
    ]
    workspaces, phases = [], {}
    for name, obj in sorted(snapshot.workspaces.items()):
        if projects and name not in projects:
            continue
        try:
            ws = Workspace.from_object(obj)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            findings.append(
                compliance.Finding("no-foreign-objects", name, False, f"unparsable: {exc}")
            )
            continue
        workspaces.append(ws)
        phases[ws.name] = ws.status.phase or WorkspacePhase.PROVISIONING
    ready = [ws for ws in workspaces if phases[ws.name] is WorkspacePhase.READY]
    # Every workspace with a namespace is checked, and every Ready one whether or not its
    # namespace exists: a Ready workspace without one fails (Pod Security names why) rather
    # than dropping out of the report.
    checked = [
        ws
        for ws in workspaces
        if phases[ws.name] is WorkspacePhase.READY
        or names.namespace_name(ws.name) in snapshot.namespaces
    ]
    apiserver = apiserver_addresses(kube) if ready else []
    findings += _network(snapshot, ready, settings, apiserver)
    if runtime is not None:
        findings += runtime_findings(kube, settings, ready, apiserver, runtime)
    for ws in checked:
        findings += _namespace_findings(snapshot, ws, phases[ws.name], settings)
    probes = compliance.rbac_probes(checked, phases, settings)
    findings += compliance.judge_rbac(zip(probes, _review_all(connect, probes), strict=True))
    findings.append(
        compliance.judge_kubelet_api(kube.list(CLUSTER_ROLES), kube.list(CLUSTER_ROLE_BINDINGS))
    )
    hub_deployments = kube.list(DEPLOYMENTS, namespace=settings.hub_namespace)
    findings.append(compliance.judge_hub_sign_in(settings.hub_namespace, hub_deployments))
    findings.append(_platform_buckets(kube, settings))
    findings.append(_exemptions(kube, settings))
    if audit is None:
        findings.append(
            compliance.Finding(
                "audit-chain",
                compliance.CLUSTER,
                False,
                "unproven: S3 is not configured (set TRE_S3_ENDPOINT_URL and the read keys)",
            )
        )
    else:
        try:
            problems, entries = audit()
        except TreError as exc:  # no bucket, no access: unproven, so failed
            problems, entries = [f"cannot read the audit log: {exc}"], None
        findings.append(compliance.judge_audit(problems, entries))
    return Report(findings, len(workspaces))


def _platform_buckets(kube: Kube, settings: Settings) -> compliance.Finding:
    """Each platform bucket offered as a dataset source, as a server-side dry run (nothing
    is stored): the API server itself must refuse it."""
    answers: dict[str, str | None] = {}
    for bucket, dataset in compliance.platform_bucket_datasets(settings).items():
        try:
            kube.create(dataset, dry_run=True)
            answers[bucket] = None
        except TreError as exc:
            answers[bucket] = str(exc)
    return compliance.judge_platform_buckets(answers)


def _exemptions(kube: Kube, settings: Settings) -> compliance.Finding:
    """The kube-system accounts the installed policies exempt, against the planned ones."""
    ours = [p for p in kube.list(POLICIES) if p["metadata"]["name"].startswith("tre-")]
    planned = [o for o in plan_platform(settings) if o["kind"] == "ValidatingAdmissionPolicy"]
    return compliance.judge_exemptions(
        compliance.admission_exemptions(ours), compliance.admission_exemptions(planned)
    )


def _network(
    snapshot: Snapshot,
    ready: Sequence[Workspace],
    settings: Settings,
    apiserver: Sequence[tuple[ipaddress.IPv4Address, int]],
) -> list[compliance.Finding]:
    if not ready:
        return []
    live = {ws.name: _policies_in(snapshot, names.namespace_name(ws.name)) for ws in ready}
    findings = [
        compliance.judge_policies_as_planned(ws.name, live[ws.name], settings) for ws in ready
    ]
    projects = [ws.name for ws in ready]
    try:
        executable = nca.ensure_nca()
        namespaces, pods = compliance.nca_world(projects, settings)
        text = nca.connectivity(
            executable, [p for ps in live.values() for p in ps], namespaces, pods
        )
        edges = compliance.parse_connectivity(text)
    except (TreError, ValueError) as exc:
        return findings + [
            f for p in projects for f in compliance.judge_network_unavailable(p, str(exc))
        ]
    for project in projects:
        findings += compliance.judge_network(project, edges, settings, apiserver)
    return findings


def _policies_in(snapshot: Snapshot, namespace: str) -> list[Manifest]:
    ours = [
        obj
        for key, obj in snapshot.owned.items()
        if key[1] == "NetworkPolicy" and key[2] == namespace
    ]
    return ours + [o for o in snapshot.foreign_in(namespace) if o["kind"] == "NetworkPolicy"]


def apiserver_addresses(kube: Kube) -> list[tuple[ipaddress.IPv4Address, int]]:
    """Every address a pod could reach the API server at: the endpoints of default/kubernetes
    (which the API server writes itself, unless it advertises a loopback address), that
    Service's ClusterIP (a CNI may judge traffic before or after the Service is resolved), and
    the address this client reaches it at."""
    found: set[tuple[ipaddress.IPv4Address, int]] = set()
    slices = kube.list(
        ENDPOINT_SLICES, namespace="default", selector="kubernetes.io/service-name=kubernetes"
    )
    for piece in slices:
        ports = [p["port"] for p in piece.get("ports") or [] if p.get("protocol", "TCP") == "TCP"]
        for endpoint in piece.get("endpoints") or []:
            for address in endpoint.get("addresses") or []:
                found |= {(ip, port) for ip in _ipv4(address) for port in ports}
    service = kube.get(SERVICES, "kubernetes", "default") or {}
    spec = service.get("spec") or {}
    for port in spec.get("ports") or []:
        found |= {(ip, port["port"]) for ip in _ipv4(spec.get("clusterIP"))}
    host, port = getattr(kube.api, "host", None), getattr(kube.api, "port", None)
    if isinstance(port, int):
        found |= {(ip, port) for ip in _ipv4(host)}
    return sorted(found)


def _ipv4(text: object) -> list[ipaddress.IPv4Address]:
    # IPv6 and host names: the policies and the analysis here are IPv4 only
    try:
        return [ipaddress.IPv4Address(str(text))]
    except ValueError:
        return []


def _namespace_findings(
    snapshot: Snapshot, ws: Workspace, phase: WorkspacePhase, settings: Settings
) -> list[compliance.Finding]:
    namespace = names.namespace_name(ws.name)
    desired = plan_for_phase(ws, phase, settings)
    pods = snapshot.pods_in(namespace)
    found = [
        compliance.judge_psa(ws.name, snapshot.namespaces.get(namespace), settings),
        compliance.judge_foreign(ws.name, snapshot.foreign_in(namespace), pods, ws, phase, desired),
    ]
    if phase is WorkspacePhase.READY:
        owned = snapshot.owned_by(ws.name)
        pvs = {k[3]: o for k, o in owned.items() if k[1] == "PersistentVolume"}
        claims = {
            k[3]: o
            for k, o in owned.items()
            if k[1] == "PersistentVolumeClaim" and k[2] == namespace
        }
        found.append(compliance.judge_datasets(ws, pvs, claims, pods))
    return found


def _review_all(
    connect: Callable[[], Kube], probes: Sequence[compliance.Probe]
) -> list[bool | str]:
    """Each probe's answer (allowed or not), or the error that kept it from one."""
    if not probes:
        return []
    # a client sends one request at a time: a few connections, each its own client
    clients = [connect() for _ in range(min(REVIEW_CONNECTIONS, len(probes)))]
    chunks = [list(probes[i :: len(clients)]) for i in range(len(clients))]

    def review(args: tuple[Kube, list[compliance.Probe]]) -> list[bool | str]:
        client, chunk = args
        answers: list[bool | str] = []
        for probe in chunk:
            try:
                result = client.create(probe.review())
                answers.append(bool((result.get("status") or {}).get("allowed")))
            except TreError as exc:
                answers.append(str(exc))
        return answers

    with ThreadPoolExecutor(len(clients)) as pool:
        results = list(pool.map(review, zip(clients, chunks, strict=True)))
    # back into the probes' order
    answers: list[bool | str] = [False] * len(probes)
    for i, chunk_answers in enumerate(results):
        for j, answer in enumerate(chunk_answers):
            answers[i + j * len(clients)] = answer
    return answers
