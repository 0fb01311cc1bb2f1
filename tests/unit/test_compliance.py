"""`tre check`'s judgements, one table per check (provisioner.planning.compliance).

Behaviours under test:
- NCA's connectivity lines parse into edges (pods, single addresses, ranges, protocol and
  port sets); a connection set or endpoint the parser does not know raises (never guessed);
- the real NCA output for the planned policies (host-address mode, recorded from NCA 2.1.0)
  passes every network finding;
- the network findings: egress to any range outside the platform host fails net-internet,
  one covering 169.254.169.254 fails net-metadata, one covering the API server's address
  and port fails net-apiserver; traffic to or from another project or the outsider fails
  net-cross-project; an extra port or a missing arrow fails net-allowed-paths; an unknown
  API server address fails closed;
- the structural comparison passes the plan and API-server defaults, names a missing,
  unplanned or changed policy;
- Pod Security: enforce=restricted at the pinned version, or the label at fault is named;
- foreign objects: a NetworkPolicy or RoleBinding not ours, a pod not started by the hub for
  a member;
- datasets: each layer's fault is named (PV source, claimRef, PVC binding, writable pod mount,
  a dataset claim not in the spec);
- RBAC: the hub may create pods only in Ready workspaces; an answer that differs, or a review
  that failed, fails the finding; every check names a SATRE statement that exists;
- the kubelet's API (S15): a ClusterRoleBinding giving anyone but the control plane
  nodes/proxy, nodes/log or nodes/checkpoint with a verb that reaches the kubelet (also
  through `*`, `nodes/*`, `*/proxy`) fails naming the subject, the binding and the role; read
  verbs on nodes, metrics and stats, another API group pass; no role the platform plans or
  the chart installs grants any of them.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.chart.generate import CHART_DIR
from provisioner.compliance.nca import (
    NCA_VERSION,
    REQUIREMENTS,
    NcaError,
    connectivity,
    nca_home,
)
from provisioner.models.resources import (
    DatasetSource,
    S3Source,
    Workspace,
    WorkspaceDataset,
    WorkspacePhase,
    WorkspaceSpec,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier
from provisioner.planning import compliance as c
from provisioner.planning.audit_anchor import plan_audit_anchor
from provisioner.planning.names import ANNOTATION_USER, LABEL_DATASET, namespace_name
from provisioner.planning.network_policies import network_policies
from provisioner.planning.rbac import plan_airlock_identity, plan_platform_rbac
from provisioner.planning.workspace import plan_workspace

SETTINGS = Settings(
    hub_namespace="tre-hub",
    airlock_namespace="tre-airlock",
    dns_namespace="tre-system",
    hub_api_port=8081,
    airlock_port=8080,
    notebook_port=8888,
    psa_version="v1.36",
    platform_host_ip=None,
)
HOST = "10.99.0.1"
HOST_SETTINGS = SETTINGS.model_copy(update={"platform_host_ip": ipaddress.IPv4Address(HOST)})
APISERVER = [(ipaddress.IPv4Address("10.0.0.1"), 443), (ipaddress.IPv4Address(HOST), 6443)]
NB = "tre-alpha/notebook"
OTHER = "tre-alpha/other"

# NCA 2.1.0, `--connectivity -o txt_no_fw_rules`, on the planned policies of projects alpha
# and beta with platform_host_ip 10.99.0.1 (lines of platform pods trimmed).
NCA_HOST_MODE = """\
global: cluster has 9 unique endpoints, 6 namespaces
10.99.0.1 => tre-alpha/notebook[Pod] : {protocols:TCP,dst_ports:8888}
10.99.0.1 => tre-beta/notebook[Pod] : {protocols:TCP,dst_ports:8888}
10.99.0.1 => tre-hub/hub[Pod] : All connections
10.99.0.2-255.255.255.255 => tre-hub/hub[Pod] : All connections
tre-alpha/notebook[Pod] => 10.99.0.1 : {protocols:TCP,dst_ports:53,8080-8081}
tre-alpha/notebook[Pod] => 10.99.0.1 : {protocols:UDP,dst_ports:53}
tre-beta/notebook[Pod] => 10.99.0.1 : {protocols:TCP,dst_ports:53,8080-8081}
tre-beta/notebook[Pod] => 10.99.0.1 : {protocols:UDP,dst_ports:53}
tre-hub/hub[Pod] => 0.0.0.0-255.255.255.255 : All connections
Total run time:   0.02 seconds
"""


def ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def tcp(*ports: int) -> frozenset[c.Conn]:
    return frozenset(("TCP", p, p) for p in ports)


DNS = tcp(53) | {("UDP", 53, 53)}


def planned_edges() -> list[c.Edge]:
    """The pod-mode arrows of project alpha, exactly as planned."""
    return [
        c.Edge(NB, "tre-system/dns", DNS),
        c.Edge(NB, "tre-hub/hub", tcp(8081)),
        c.Edge(NB, "tre-airlock/airlock", tcp(8080)),
        c.Edge("tre-hub/hub", NB, tcp(8888)),
        c.Edge("tre-hub/proxy", NB, tcp(8888)),
        # platform pods are open to everything; not alpha's business
        c.Edge("tre-hub/hub", (ip("0.0.0.0"), ip("255.255.255.255")), c.ALL),
    ]


def failed(findings: list[c.Finding]) -> dict[str, str]:
    return {f.check: f.detail for f in findings if not f.passed}


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "edge"),
    [
        (
            "tre-a/notebook[Pod] => 10.0.0.1 : {protocols:TCP,dst_ports:53,8080-8081}",
            c.Edge(
                "tre-a/notebook",
                (ip("10.0.0.1"), ip("10.0.0.1")),
                frozenset({("TCP", 53, 53), ("TCP", 8080, 8081)}),
            ),
        ),
        (
            "0.0.0.0-9.255.255.255 => tre-a/other[Pod] : All connections",
            c.Edge((ip("0.0.0.0"), ip("9.255.255.255")), "tre-a/other", c.ALL),
        ),
        (
            "tre-a/notebook[Pod] => tre-system/dns[Pod] : {protocols:TCP, UDP,dst_ports:53}",
            c.Edge("tre-a/notebook", "tre-system/dns", DNS),
        ),
        (
            "tre-a/notebook[Pod] => tre-b/notebook[Pod] : {protocols:TCP}",
            c.Edge("tre-a/notebook", "tre-b/notebook", frozenset({("TCP", 0, 65535)})),
        ),
    ],
)
def test_connectivity_lines_parse(line: str, edge: c.Edge) -> None:
    assert c.parse_connectivity(f"global: header\n{line}\nTotal run time: 1s\n") == [edge]


@pytest.mark.parametrize(
    "line",
    [
        "tre-a/notebook[Pod] => 10.0.0.1 : {protocols:TCP,src_ports:53}",
        "tre-a/notebook[Pod] => 10.0.0.1 : some connections",
        "tre-a/notebook[Pod] => fd00::1 : All connections",
    ],
)
def test_unknown_nca_output_raises(line: str) -> None:
    with pytest.raises(c.NcaOutputError):
        c.parse_connectivity(line)


def test_real_nca_output_of_the_planned_policies_passes() -> None:
    edges = c.parse_connectivity(NCA_HOST_MODE)
    for project in ("alpha", "beta"):
        assert failed(c.judge_network(project, edges, HOST_SETTINGS, APISERVER)) == {}


# --- the network findings --------------------------------------------------------------------

EVERYWHERE = (ip("0.0.0.0"), ip("255.255.255.255"))


@pytest.mark.parametrize(
    ("extra", "missing", "settings", "expected"),
    [
        ([], [], SETTINGS, set()),
        (
            [c.Edge(NB, EVERYWHERE, c.ALL)],
            [],
            SETTINGS,
            {"net-internet", "net-metadata", "net-apiserver", "net-allowed-paths"},
        ),
        (
            [c.Edge(NB, (ip("169.254.0.0"), ip("169.254.255.255")), tcp(80))],
            [],
            SETTINGS,
            {"net-internet", "net-metadata", "net-allowed-paths"},
        ),
        (
            [c.Edge(OTHER, "tre-beta/notebook", c.ALL)],
            [],
            SETTINGS,
            {"net-cross-project", "net-allowed-paths"},
        ),
        (
            [c.Edge("tre-check-outsider/outsider", NB, tcp(8888))],
            [],
            SETTINGS,
            {"net-cross-project", "net-allowed-paths"},
        ),
        ([c.Edge(NB, "tre-hub/hub", tcp(22))], [], SETTINGS, {"net-allowed-paths"}),
        ([], [1], SETTINGS, {"net-allowed-paths"}),
        # host mode: the API server on the platform host, its port opened
        (
            [c.Edge(NB, (ip(HOST), ip(HOST)), tcp(6443))],
            [],
            HOST_SETTINGS,
            {"net-apiserver", "net-allowed-paths"},
        ),
    ],
)
def test_network_findings(
    extra: list[c.Edge], missing: list[int], settings: Settings, expected: set[str]
) -> None:
    if settings.platform_host_ip is None:
        edges = planned_edges()
    else:
        edges = c.parse_connectivity(NCA_HOST_MODE)
    edges = [e for i, e in enumerate(edges) if i not in missing] + extra
    findings = c.judge_network("alpha", edges, settings, APISERVER)
    assert [f.check for f in findings] == list(c.NCA_CHECKS)
    assert set(failed(findings)) == expected


def test_a_missing_arrow_and_an_extra_port_are_named() -> None:
    edges = [*planned_edges()[1:], c.Edge(NB, "tre-hub/hub", tcp(8081, 22))]
    detail = failed(c.judge_network("alpha", edges, SETTINGS, APISERVER))["net-allowed-paths"]
    assert detail == (
        "unexpected tre-alpha/notebook -> tre-hub/hub (TCP/22); "
        "missing tre-alpha/notebook -> tre-system/dns (TCP/53,UDP/53)"
    )


def test_an_unknown_api_server_fails_closed() -> None:
    detail = failed(c.judge_network("alpha", planned_edges(), SETTINGS, []))
    assert set(detail) == {"net-apiserver"}
    assert "unproven" in detail["net-apiserver"]


def test_nca_unavailable_fails_every_proven_finding() -> None:
    findings = c.judge_network_unavailable("alpha", "exit 2")
    assert [(f.check, f.passed) for f in findings] == [(check, False) for check in c.NCA_CHECKS]


def test_the_nca_world_has_a_notebook_and_another_pod_per_project_and_a_spoof() -> None:
    namespaces, pods = c.nca_world(["alpha"], SETTINGS)
    refs = {
        f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["metadata"]["labels"]
        for p in pods
    }
    assert refs == {
        NB: {"component": "singleuser-server"},
        OTHER: {"app": "anything-else"},
        "tre-hub/hub": {"component": "hub"},
        "tre-hub/proxy": {"component": "proxy"},
        "tre-airlock/airlock": {"app.kubernetes.io/name": "tre-airlock"},
        "tre-system/dns": {"app.kubernetes.io/name": "tre-dns"},
        "tre-check-outsider/outsider": {"component": "hub"},
    }
    assert {n["metadata"]["name"] for n in namespaces} == {r.split("/")[0] for r in refs}


# --- structural comparison -------------------------------------------------------------------


def _live(project: str) -> list[dict[str, Any]]:
    return copy.deepcopy(network_policies(project, SETTINGS))


def test_the_planned_policies_with_server_defaults_pass() -> None:
    live = _live("alpha")
    for policy in live:
        policy["spec"].setdefault("ingress", [])  # the server may return empty lists
    assert c.judge_policies_as_planned("alpha", live, SETTINGS).passed


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (lambda live: live.pop(0), "missing default-deny-all"),
        (
            lambda live: live.append({"metadata": {"name": "allow-all"}, "spec": {}}),
            "unplanned allow-all",
        ),
        (
            lambda live: live[2]["spec"]["egress"][0]["ports"][0].update(port=22),
            "allow-notebook-to-hub-api differs from the plan",
        ),
    ],
)
def test_policies_that_differ_from_the_plan_are_named(change: Any, detail: str) -> None:
    live = _live("alpha")
    change(live)
    result = c.judge_policies_as_planned("alpha", live, SETTINGS)
    assert (result.passed, result.detail) == (False, detail)


# --- Pod Security, foreign objects -------------------------------------------------------------


def _namespace(**labels: str) -> dict[str, Any]:
    return {"metadata": {"name": "tre-alpha", "labels": labels}}


@pytest.mark.parametrize(
    ("namespace", "detail"),
    [
        (
            _namespace(
                **{
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "v1.36",
                }
            ),
            None,
        ),
        (
            _namespace(
                **{
                    "pod-security.kubernetes.io/enforce": "baseline",
                    "pod-security.kubernetes.io/enforce-version": "v1.36",
                }
            ),
            "label pod-security.kubernetes.io/enforce=baseline, should be restricted",
        ),
        (
            _namespace(**{"pod-security.kubernetes.io/enforce": "restricted"}),
            "label pod-security.kubernetes.io/enforce-version=<unset>, should be v1.36",
        ),
        (None, "the project namespace does not exist"),
    ],
)
def test_pod_security(namespace: dict[str, Any] | None, detail: str | None) -> None:
    result = c.judge_psa("alpha", namespace, SETTINGS)
    assert result.passed is (detail is None)
    if detail is not None:
        assert result.detail == detail


def workspace(datasets: list[WorkspaceDataset] | None = None) -> Workspace:
    return Workspace(
        name="alpha",
        spec=WorkspaceSpec(
            project="alpha",
            namespace=namespace_name("alpha"),
            members=["lea", "ravi"],
            datasets=datasets or [],
        ),
    )


def pod(name: str, user: str | None, claims: dict[str, bool] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "tre-alpha",
            "annotations": {ANNOTATION_USER: user} if user else {},
        },
        "spec": {
            "volumes": [
                {"name": n, "persistentVolumeClaim": {"claimName": n, "readOnly": ro}}
                for n, ro in (claims or {}).items()
            ]
        },
    }


@pytest.mark.parametrize(
    ("foreign", "pods", "detail"),
    [
        ([], [pod("jupyter-lea", "lea")], None),
        (
            [{"kind": "RoleBinding", "metadata": {"name": "backdoor"}}],
            [],
            "RoleBinding backdoor not made by the controller",
        ),
        (
            [{"kind": "NetworkPolicy", "metadata": {"name": "allow-all"}}],
            [],
            "NetworkPolicy allow-all not made by the controller",
        ),
        ([], [pod("miner", None)], "pod miner: not started by the hub for a member"),
        ([], [pod("jupyter-eve", "eve")], "pod jupyter-eve: eve is no longer a member"),
    ],
)
def test_foreign_objects(
    foreign: list[dict[str, Any]], pods: list[dict[str, Any]], detail: str | None
) -> None:
    ws = workspace()
    result = c.judge_foreign(
        "alpha", foreign, pods, ws, WorkspacePhase.READY, plan_workspace(ws, SETTINGS)
    )
    assert (result.passed, result.detail if detail else None) == (detail is None, detail)


# --- datasets --------------------------------------------------------------------------------

DATASET = WorkspaceDataset(
    name="census",
    manifest_sha256="a" * 64,
    classification=ClassificationTier.INTERNAL,
    source=DatasetSource(s3=S3Source(bucket="data", prefix="census/")),
)


def _storage() -> tuple[dict[str, Any], dict[str, Any]]:
    plan = plan_workspace(workspace([DATASET]), SETTINGS)
    pvs = {o["metadata"]["name"]: o for o in plan if o["kind"] == "PersistentVolume"}
    claims = {o["metadata"]["name"]: o for o in plan if o["kind"] == "PersistentVolumeClaim"}
    return pvs, claims


PV = "tre-alpha--census"


@pytest.mark.parametrize(
    ("change", "pods", "detail"),
    [
        (lambda pvs, claims: None, [pod("jupyter-lea", "lea", {"ds-census": True})], None),
        (
            lambda pvs, claims: pvs[PV]["spec"]["csi"].update(readOnly=False),
            [],
            f"PV {PV}: volume source is not readOnly",
        ),
        (
            lambda pvs, claims: pvs[PV]["spec"]["claimRef"].update(namespace="tre-beta"),
            [],
            f"PV {PV}: reserved for tre-beta/ds-census, not tre-alpha/ds-census",
        ),
        (
            lambda pvs, claims: claims["ds-census"]["spec"].update(volumeName="other"),
            [],
            "PVC ds-census: bound to other",
        ),
        (lambda pvs, claims: pvs.clear(), [], f"PV {PV} of dataset census is missing"),
        (
            lambda pvs, claims: None,
            [pod("jupyter-lea", "lea", {"ds-census": False})],
            "pod jupyter-lea: mounts ds-census writable",
        ),
        (
            lambda pvs, claims: claims.update(
                {"ds-old": {"metadata": {"labels": {LABEL_DATASET: "old"}}}}
            ),
            [],
            "PVC ds-old: dataset old not in the spec",
        ),
    ],
)
def test_datasets_read_only(change: Any, pods: list[dict[str, Any]], detail: str | None) -> None:
    pvs, claims = _storage()
    assert PV in pvs, sorted(pvs)
    change(pvs, claims)
    result = c.judge_datasets(workspace([DATASET]), pvs, claims, pods)
    assert (result.passed, result.detail if detail else None) == (detail is None, detail)


# --- RBAC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", list(WorkspacePhase))
def test_the_hub_may_create_pods_only_in_ready_workspaces(phase: WorkspacePhase) -> None:
    probes = c.rbac_probes([workspace()], {"alpha": phase}, SETTINGS)
    hub_pods = [
        p.allowed
        for p in probes
        if p.check == "rbac-hub"
        and p.scope == "alpha"
        and p.describe().endswith("create pods in tre-alpha")
    ]
    assert hub_pods == [phase is WorkspacePhase.READY]


def test_rbac_answers_that_differ_or_failed_fail_their_finding() -> None:
    probes = c.rbac_probes([workspace()], {"alpha": WorkspacePhase.READY}, SETTINGS)
    answers: list[bool | str] = [p.allowed for p in probes]
    first_researcher = next(i for i, p in enumerate(probes) if p.check == "rbac-researcher")
    answers[first_researcher] = True  # may create pods
    first_hub = next(i for i, p in enumerate(probes) if p.check == "rbac-hub")
    answers[first_hub] = "503 Service Unavailable"
    findings = c.judge_rbac(zip(probes, answers, strict=True))
    assert failed(findings) == {
        "rbac-researcher": "lea create pods in tre-alpha: allowed, must be denied",
        "rbac-hub": f"{probes[first_hub].describe()}: review failed: 503 Service Unavailable",
    }


def test_the_airlocks_reach_is_probed_as_impersonation_is_judged() -> None:
    probes = c.rbac_probes([workspace()], {"alpha": WorkspacePhase.READY}, SETTINGS)
    airlock = {(p.describe(), p.allowed) for p in probes if p.check == "rbac-airlock"}
    user = SETTINGS.airlock_user
    assert {
        (f"{user} impersonate:user-info users cluster-wide", True),
        (f"{user} impersonate users cluster-wide", False),
        (f"{user} impersonate:serviceaccount serviceaccounts cluster-wide", False),
        (f"{user} impersonate:user-info groups cluster-wide", False),
        (f"{user} impersonate-on:user-info:create exportrequests cluster-wide", True),
        (f"{user} impersonate-on:user-info:create pods cluster-wide", False),
        (f"{user} impersonate-on:user-info:get secrets cluster-wide", False),
        (f"{user} patch exportrequests/status cluster-wide", True),
        (f"{user} create pods in tre-system", False),
    } <= airlock
    assert {p.scope for p in probes if p.check == "rbac-airlock"} == {"cluster"}


def test_every_check_names_a_satre_statement() -> None:
    assert {satre for satre, _ in c.CHECKS.values()} <= set(c.SATRE)
    assert {"2.1.14", "2.2.10", "2.2.11", "3.2.03"} <= set(c.SATRE)


# --- the NCA runner --------------------------------------------------------------------------


def test_nca_that_cannot_run_raises_its_error(tmp_path: Path) -> None:
    namespaces, pods = c.nca_world(["alpha"], SETTINGS)
    with pytest.raises(NcaError, match="did not run"):
        connectivity(tmp_path / "no-nca", _live("alpha"), namespaces, pods)


def test_nca_lives_in_a_versioned_home_under_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRE_CACHE_DIR", str(tmp_path))
    assert nca_home() == tmp_path / f"nca-{NCA_VERSION}"
    pins = REQUIREMENTS.read_text()
    assert f"network-config-analyzer=={NCA_VERSION}\n" in pins
    assert all("==" in line for line in pins.splitlines() if line and not line.startswith("#"))


def _hub_deployment(env: list[dict[str, str]]) -> dict[str, Any]:
    container = {"name": "hub", "image": "ucloud-tre/hub:0.1.0", "env": env}
    return {
        "metadata": {"name": "hub"},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


def test_a_hub_with_the_shared_password_sign_in_fails_the_check() -> None:
    shared = _hub_deployment([{"name": "TRE_HUB_DEV_AUTHENTICATOR", "value": "true"}])
    result = c.judge_hub_sign_in("tre-hub", [shared])
    assert not result.passed
    assert "tre-hub/hub" in result.detail and "hubOidc" in result.detail
    assert result.satre == "3.2.03"


def test_a_hub_with_oidc_or_no_hub_in_the_cluster_passes_saying_which() -> None:
    oidc = _hub_deployment([{"name": "TRE_HUB_OIDC_ISSUER", "value": "https://idp.example"}])
    assert c.judge_hub_sign_in("tre-hub", [oidc]).passed
    # switched off explicitly is not the shared password either
    off = _hub_deployment([{"name": "TRE_HUB_DEV_AUTHENTICATOR", "value": "false"}])
    assert c.judge_hub_sign_in("tre-hub", [off]).passed
    none = c.judge_hub_sign_in("tre-hub", [])
    assert none.passed and "not checked" in none.detail


# --- the kubelet's API (S15) -------------------------------------------------------------------


def _cluster_role(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "ClusterRole", "metadata": {"name": name}, "rules": list(rules)}


def _bound(name: str, role: str, *subjects: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": list(subjects),
    }


_MON = {"kind": "User", "name": "mon"}


@pytest.mark.parametrize(
    ("rule", "granted"),
    [
        ({"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}, ["nodes/proxy"]),
        ({"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["create"]}, ["nodes/proxy"]),
        (
            {"apiGroups": ["*"], "resources": ["nodes/*"], "verbs": ["*"]},
            ["nodes/checkpoint", "nodes/log", "nodes/proxy"],
        ),
        (
            {"apiGroups": [""], "resources": ["*"], "verbs": ["get"]},
            ["nodes/checkpoint", "nodes/log", "nodes/proxy"],
        ),
        ({"apiGroups": [""], "resources": ["*/proxy"], "verbs": ["get"]}, ["nodes/proxy"]),
        (
            {
                "apiGroups": [""],
                "resources": ["nodes/proxy"],
                "resourceNames": ["tre-node"],
                "verbs": ["get"],
            },
            ["nodes/proxy"],
        ),
        ({"apiGroups": [""], "resources": ["nodes/log"], "verbs": ["get"]}, ["nodes/log"]),
        ({"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["list", "watch"]}, []),
        ({"apiGroups": [""], "resources": ["nodes", "nodes/stats"], "verbs": ["get"]}, []),
        ({"apiGroups": ["metrics.k8s.io"], "resources": ["*"], "verbs": ["get"]}, []),
    ],
)
def test_roles_that_reach_the_kubelets_data(rule: dict[str, Any], granted: list[str]) -> None:
    role = _cluster_role("r3-np", rule)
    assert c.kubelet_data_rules(role) == granted
    found = c.judge_kubelet_api([role], [_bound("r3-np", "r3-np", _MON)])
    assert found.passed is not granted
    if granted:
        assert found.detail == (
            f"User mon holds {', '.join(granted)} (ClusterRoleBinding r3-np, ClusterRole "
            "r3-np): it can run commands in and read notebooks through the kubelet, past "
            "tre-pod-no-exec; remove the binding"
        )


def test_the_control_plane_may_hold_the_kubelets_api() -> None:
    admin = _cluster_role("cluster-admin", {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})
    bindings = [
        _bound("cluster-admin", "cluster-admin", {"kind": "Group", "name": "system:masters"}),
        _bound(
            "system:controller:namespace-controller",
            "cluster-admin",
            {"kind": "ServiceAccount", "name": "namespace-controller", "namespace": "kube-system"},
        ),
    ]
    assert c.judge_kubelet_api([admin], bindings).passed
    addon = {"kind": "ServiceAccount", "name": "namespace-controller", "namespace": "monitoring"}
    found = c.judge_kubelet_api([admin], [*bindings, _bound("mon", "cluster-admin", addon)])
    assert not found.passed
    assert found.detail.startswith("ServiceAccount monitoring/namespace-controller holds")


def test_no_platform_role_reaches_the_kubelets_api() -> None:
    """Neither what `tre install` plans nor what the chart installs (its generated
    templates hold every Role and ClusterRole of the chart)."""
    settings = Settings()
    planned = [
        *plan_platform_rbac(settings),
        *plan_airlock_identity(settings),
        *plan_audit_anchor(settings),
    ]
    texts = {p.name: p.read_text() for p in sorted((CHART_DIR / "templates").rglob("*.yaml"))}
    templated = [name for name, text in texts.items() if "{{-" in text]
    # templates YAML cannot read hold no role (all of them are in the generated rbac.yaml)
    assert [n for n in templated if re.search(r"kind: (Cluster)?Role\b", texts[n])] == []
    chart = [
        doc
        for name, text in texts.items()
        if name not in templated
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    roles = [o for o in [*planned, *chart] if o["kind"] in ("Role", "ClusterRole")]
    assert len(roles) >= 8
    assert {o["metadata"]["name"]: c.kubelet_data_rules(o) for o in roles} == {
        o["metadata"]["name"]: [] for o in roles
    }


# --- the platform's buckets and the policies' exemptions (F20, review 3 S6 and S20) ---------------


def test_each_platform_bucket_is_probed_as_a_whole_bucket_at_the_highest_tier() -> None:
    settings = Settings()
    datasets = c.platform_bucket_datasets(settings)
    assert sorted(datasets) == sorted(settings.platform_buckets)
    for bucket, dataset in datasets.items():
        assert dataset["spec"]["source"] == {"s3": {"bucket": bucket, "prefix": ""}}
        assert dataset["spec"]["classification"] == "sensitive"


def test_platform_buckets_pass_only_when_each_is_refused_as_one() -> None:
    from provisioner.models.resources import DatasetSource, S3Source
    from provisioner.planning.datasets import platform_bucket_refusal

    settings = Settings()
    refusal = {
        b: platform_bucket_refusal(DatasetSource(s3=S3Source(bucket=b)), settings)
        for b in settings.platform_buckets
    }
    assert c.judge_platform_buckets(refusal).passed
    admitted = c.judge_platform_buckets({**refusal, settings.audit_bucket: None})
    assert not admitted.passed
    assert f"a dataset reading all of {settings.audit_bucket} was admitted" in admitted.detail
    other = c.judge_platform_buckets({**refusal, settings.audit_bucket: "connection refused"})
    assert not other.passed
    assert "unproven, refused for another reason: connection refused" in other.detail


def test_the_exemptions_are_listed_and_an_unplanned_one_fails() -> None:
    from provisioner.planning.admission import plan_admission_policies

    policies = [
        p for p in plan_admission_policies(Settings()) if p["kind"] == "ValidatingAdmissionPolicy"
    ]
    planned = c.admission_exemptions(policies)
    assert "system:serviceaccount:kube-system:generic-garbage-collector" in planned
    listed = c.judge_exemptions(planned, planned)
    assert listed.passed
    assert "namespace-controller (" in listed.detail
    edited = copy.deepcopy(policies)
    target = next(p for p in edited if p["metadata"]["name"] == "tre-pod-workspace-access")
    target["spec"]["matchConditions"] = [
        {
            "name": "x",
            "expression": "request.userInfo.username != "
            "'system:serviceaccount:kube-system:gitops-agent'",
        }
    ]
    found = c.judge_exemptions(c.admission_exemptions(edited), planned)
    assert not found.passed
    assert (
        "system:serviceaccount:kube-system:gitops-agent is exempt in tre-pod-workspace-access"
        in (found.detail)
    )
