"""`tre check --probe-from-pods`, the pure parts and the probe program.

Behaviours under test:
- `--outside` takes an IPv4 address and a TCP port, nothing else, and never the pod itself;
  `--probe-from-pods` without `--outside` (or `--outside` without it, or either with `--as`)
  is refused before any call to a cluster, naming the flag and the fix;
- only Ready nodes with an InternalIP count, with their kubelet's port;
- the plan: loopback API server addresses are left out (in a pod that is the pod itself),
  every other workspace's listener is a cross-project target, the spec is what the program
  reads; the probe pod is a notebook to the policies (whole manifest);
- the verdicts: everything as required passes; a connection that must fail and did is named;
  no evidence (no pod, no result, no resolver, a single workspace, a failed positive control)
  is a failure, never a pass; a resolver that answers an outside name fails;
- a pod's progress is read from its status (scheduled or not, running, ended with a message);
- the probe program (stdlib only) connects, GETs and builds and reads DNS packets, against
  servers on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.compliance import probe_script
from provisioner.models.settings import Settings
from provisioner.planning import runtime_probes as rp
from provisioner.planning.notebook_pods import NOTEBOOK_IMAGE

# S3 as `tre dev up` runs it: on the host's loopback (so tried on the node's address only)
SETTINGS = Settings(
    dns_resolver_ip="10.99.0.1",
    platform_host_ip="10.99.0.1",
    s3_endpoint_url="http://127.0.0.1:8333",
)
API = [
    (ipaddress.IPv4Address("127.0.0.1"), 6443),
    (ipaddress.IPv4Address("10.0.0.1"), 443),
]
OUTSIDE = [(ipaddress.IPv4Address("10.98.0.2"), 8443)]
NODES = [rp.Node("tre-node", ipaddress.IPv4Address("10.99.0.1"), 10250)]
HUB = "hub API http://hub.tre-hub.svc.cluster.local:8081/hub/api/"
DNS_HUB = "dns hub.tre-hub.svc.cluster.local"
DNS_OUT = "dns example.com"


# --- --outside ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("169.254.169.254:80", ("169.254.169.254", 80)),
        ("10.98.0.2:8443", ("10.98.0.2", 8443)),
        ("192.0.2.1:65535", ("192.0.2.1", 65535)),
    ],
)
def test_outside_targets_are_parsed(text: str, expected: tuple[str, int]) -> None:
    address, port = rp.parse_outside(text)
    assert (str(address), port) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("169.254.169.254", "expected ADDR:PORT"),
        ("metadata.internal:80", "expected ADDR:PORT"),
        ("10.0.0.1:0", "expected ADDR:PORT"),
        ("10.0.0.1:65536", "expected ADDR:PORT"),
        ("10.0.0.1:http", "expected ADDR:PORT"),
        ("[::1]:80", "expected ADDR:PORT"),
        ("10.0.0.1:-1", "expected ADDR:PORT"),
        ("127.0.0.1:80", "is the probe pod itself"),
        ("0.0.0.0:80", "is the probe pod itself"),
    ],
)
def test_bad_outside_targets_are_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=rf"^--outside {re.escape(repr(text))}: .*{why}"):
        rp.parse_outside(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["check", "--probe-from-pods"],
            "error: --probe-from-pods: needs at least one --outside ADDR:PORT",
        ),
        (
            ["check", "--outside", "10.0.0.9:80"],
            "error: --outside: only used with --probe-from-pods",
        ),
        (
            ["check", "--probe-from-pods", "--outside", "10.0.0.9"],
            "error: --outside '10.0.0.9': expected ADDR:PORT",
        ),
        (
            ["--as", "bob", "check", "--probe-from-pods", "--outside", "10.0.0.9:80"],
            "error: --probe-from-pods: cannot be combined with --as",
        ),
    ],
)
def test_the_cli_refuses_probes_without_a_chosen_outside_address(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # refused before any cluster is asked: there is none
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


# --- nodes, plan, pod ----------------------------------------------------------------------


def node(name: str, ready: str, addresses: list[dict[str, str]], port: int | None) -> Any:
    status: dict[str, Any] = {
        "conditions": [{"type": "Ready", "status": ready}],
        "addresses": addresses,
    }
    if port is not None:
        status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": port}}
    return {"metadata": {"name": name}, "status": status}


def test_only_ready_nodes_with_an_internal_ip_count() -> None:
    internal = [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "10.1.0.5"}]
    nodes = [
        node("b", "True", internal, 10255),
        node("a", "True", [{"type": "InternalIP", "address": "10.1.0.4"}], None),
        node("down", "False", [{"type": "InternalIP", "address": "10.1.0.6"}], 10250),
        node("v6-only", "True", [{"type": "InternalIP", "address": "fd00::1"}], 10250),
    ]
    assert rp.ready_nodes(nodes) == [
        rp.Node("a", ipaddress.IPv4Address("10.1.0.4"), 10250),
        rp.Node("b", ipaddress.IPv4Address("10.1.0.5"), 10255),
    ]


def plans(listeners: dict[str, str] | None = None) -> dict[str, rp.ProbePlan]:
    listeners = {"alpha": "10.88.0.6", "beta": "10.88.0.7"} if listeners is None else listeners
    return rp.plan_probes(["alpha", "beta"], listeners, SETTINGS, API, OUTSIDE, NODES)


def test_the_prober_spec_lists_every_target_but_loopback() -> None:
    assert plans()["alpha"].spec() == {
        "mode": "probe",
        "timeout": 2.0,
        "settle": 10.0,
        "connect": [
            {"id": "API server 10.0.0.1:443", "host": "10.0.0.1", "port": 443},
            {"id": "outside 10.98.0.2:8443", "host": "10.98.0.2", "port": 8443},
            {"id": "kubelet tre-node 10.99.0.1:10250", "host": "10.99.0.1", "port": 10250},
            {"id": "S3 on node tre-node 10.99.0.1:80", "host": "10.99.0.1", "port": 80},
            {"id": "S3 on node tre-node 10.99.0.1:443", "host": "10.99.0.1", "port": 443},
            {"id": "S3 on node tre-node 10.99.0.1:8333", "host": "10.99.0.1", "port": 8333},
            {"id": "workspace beta 10.88.0.7:8888", "host": "10.88.0.7", "port": 8888},
        ],
        "http": [{"id": HUB, "url": "http://hub.tre-hub.svc.cluster.local:8081/hub/api/"}],
        "dns": [
            {"id": DNS_HUB, "server": "10.99.0.1", "name": "hub.tre-hub.svc.cluster.local"},
            {"id": DNS_OUT, "server": "10.99.0.1", "name": "example.com"},
        ],
    }


def test_the_probe_pod_is_a_notebook_to_the_namespace() -> None:
    pod = rp.probe_pod(
        "alpha",
        "lea",
        rp.PROBER,
        {"mode": "probe"},
        script="SCRIPT",
        run_id="1a2b3c4d",
        operator="admin-ann",
        settings=SETTINGS,
    )
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "tre-check-probe-1a2b3c4d",
            "namespace": "tre-alpha",
            "labels": {
                # what the policies select, and what KubeSpawner adds (hub_config)
                "component": "singleuser-server",
                "tre.ucloud.org/project": "alpha",
                "hub.jupyter.org/network-access-hub": "true",
                "tre.ucloud.org/check-probe": "probe",
                "tre.ucloud.org/check-run": "1a2b3c4d",
            },
            "annotations": {
                "tre.ucloud.org/user": "lea",
                "tre.ucloud.org/check-probe-by": "admin-ann",
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "activeDeadlineSeconds": 600,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 100,
                "fsGroup": 100,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "dnsPolicy": "None",
            "dnsConfig": {
                "nameservers": ["10.99.0.1"],
                "searches": [],
                "options": [{"name": "ndots", "value": "1"}],
            },
            "containers": [
                {
                    "name": "probe",
                    "image": NOTEBOOK_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", "SCRIPT", '{"mode": "probe"}'],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 100,
                        "allowPrivilegeEscalation": False,
                        "privileged": False,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "250m", "memory": "64Mi"},
                    },
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }
            ],
        },
    }


# --- verdicts ---------------------------------------------------------------------------------

REFUSED = {"connected": False, "error": "timed out"}


def results(**changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A prober's report where everything is as required, with `changes` (label -> result)."""
    base: dict[str, dict[str, Any]] = {
        "API server 10.0.0.1:443": REFUSED,
        "outside 10.98.0.2:8443": REFUSED,
        "kubelet tre-node 10.99.0.1:10250": REFUSED,
        "S3 on node tre-node 10.99.0.1:80": REFUSED,
        "S3 on node tre-node 10.99.0.1:443": REFUSED,
        "S3 on node tre-node 10.99.0.1:8333": REFUSED,
        "workspace alpha 10.88.0.6:8888": REFUSED,
        "workspace beta 10.88.0.7:8888": REFUSED,
        HUB: {"status": 200},
        DNS_HUB: {"rcode": 0, "answers": 1},
        DNS_OUT: {"rcode": 3, "answers": 0},
    }
    return {**base, **changes}


def verdicts(
    outcomes: dict[str, rp.Outcome], planned: dict[str, rp.ProbePlan] | None = None
) -> dict[tuple[str, str], tuple[bool, str]]:
    found = rp.judge_runtime(planned or plans(), outcomes)
    return {(f.scope, f.check): (f.passed, f.detail) for f in found}


def test_everything_as_required_passes_with_the_evidence_named() -> None:
    found = verdicts({"alpha": results(), "beta": results()})
    assert len(found) == 2 * len(rp.RUNTIME_CHECKS)
    assert all(passed for passed, _ in found.values()), found
    assert found[("alpha", "runtime-outside")][1] == (
        "no connection from a notebook-labelled pod to outside 10.98.0.2:8443 (timed out); "
        "the hub API answered"
    )
    assert found[("alpha", "runtime-cross-project")][1] == (
        "no connection: alpha -> workspace beta 10.88.0.7:8888 (timed out); "
        "beta -> workspace alpha 10.88.0.6:8888 (timed out); the hub API answered"
    )


def test_a_path_open_only_while_the_cni_caught_up_passes_and_is_named() -> None:
    late = {"connected": False, "error": "Connection refused", "open_for": 0.6}
    found = verdicts(
        {"alpha": results(**{"kubelet tre-node 10.99.0.1:10250": late}), "beta": results()}
    )
    assert found[("alpha", "runtime-kubelet")] == (
        True,
        "no connection from a notebook-labelled pod to kubelet tre-node 10.99.0.1:10250 "
        "(Connection refused) [but reachable in the first 0.6s after the pod started, before "
        "the CNI applied its policy]; the hub API answered",
    )


def test_a_connection_that_must_fail_and_did_not_is_named() -> None:
    opened = results(**{"outside 10.98.0.2:8443": {"connected": True}})
    found = verdicts({"alpha": opened, "beta": results()})
    failed = {key: detail for key, (passed, detail) in found.items() if not passed}
    assert failed == {("alpha", "runtime-outside"): "outside 10.98.0.2:8443: connected"}


def test_a_crossing_fails_both_workspaces() -> None:
    crossed = results(**{"workspace alpha 10.88.0.6:8888": {"connected": True}})
    found = verdicts({"alpha": results(), "beta": crossed})
    failed = {key: detail for key, (passed, detail) in found.items() if not passed}
    assert failed == {
        ("alpha", "runtime-cross-project"): "beta -> workspace alpha 10.88.0.6:8888: connected",
        ("beta", "runtime-cross-project"): "beta -> workspace alpha 10.88.0.6:8888: connected",
    }


def test_no_pod_is_no_evidence() -> None:
    why = "the probe pod did not run within 120s (--probe-timeout): Unschedulable: 0/1 nodes"
    found = verdicts({"alpha": why, "beta": results()})
    alpha = {check: v for (scope, check), v in found.items() if scope == "alpha"}
    assert alpha == {check: (False, f"unproven: {why}") for check in rp.RUNTIME_CHECKS}
    # beta's prober still proves its own egress, but nothing crossed from alpha's side
    assert found[("beta", "runtime-cross-project")] == (
        True,
        "no connection: beta -> workspace alpha 10.88.0.6:8888 (timed out); the hub API answered",
    )


def test_a_failed_positive_control_leaves_the_refusals_unproven() -> None:
    dead = {k: {"connected": False, "error": "unreachable"} for k in results() if " " in k}
    dead |= {HUB: {"error": "timed out"}, DNS_HUB: {"error": "timed out"}}
    found = verdicts({"alpha": dead, "beta": dead})
    assert found[("alpha", "runtime-hub-api")] == (
        False,
        f"{HUB}: timed out; the one arrow that must answer did not, so the probes that must "
        "fail prove nothing",
    )
    for check in (
        "runtime-apiserver",
        "runtime-outside",
        "runtime-kubelet",
        "runtime-s3",
        "runtime-cross-project",
    ):
        assert found[("alpha", check)] == (
            False,
            "unproven: nothing connected, but neither did the hub API (runtime-hub-api)",
        )


def test_a_missing_result_fails() -> None:
    partial = results()
    del partial["kubelet tre-node 10.99.0.1:10250"]
    found = verdicts({"alpha": partial, "beta": results()})
    assert found[("alpha", "runtime-kubelet")] == (
        False,
        "kubelet tre-node 10.99.0.1:10250: no result",
    )


@pytest.mark.parametrize(
    ("hub", "outside", "detail"),
    [
        (
            {"rcode": 0, "answers": 1},
            {"rcode": 0, "answers": 2},
            "example.com must be NXDOMAIN at 10.99.0.1, got NOERROR with 2 answers",
        ),
        (
            {"rcode": 0, "answers": 1},
            {"rcode": 5, "answers": 0},
            "example.com must be NXDOMAIN at 10.99.0.1, got REFUSED with 0 answers",
        ),
        (
            {"rcode": 3, "answers": 0},
            {"rcode": 3, "answers": 0},
            "hub.tre-hub.svc.cluster.local not answered by 10.99.0.1: NXDOMAIN with 0 answers",
        ),
        (
            {"error": "timed out"},
            {"rcode": 3, "answers": 0},
            "hub.tre-hub.svc.cluster.local not answered by 10.99.0.1: timed out",
        ),
    ],
)
def test_dns_must_answer_the_hub_and_nothing_outside(
    hub: dict[str, Any], outside: dict[str, Any], detail: str
) -> None:
    found = verdicts({"alpha": results(**{DNS_HUB: hub, DNS_OUT: outside}), "beta": results()})
    assert found[("alpha", "runtime-dns")] == (False, detail)


def test_without_a_resolver_dns_is_unproven() -> None:
    planned = rp.plan_probes(
        ["alpha", "beta"],
        {"alpha": "10.88.0.6", "beta": "10.88.0.7"},
        Settings(platform_host_ip="10.99.0.1"),
        API,
        OUTSIDE,
        NODES,
    )
    assert planned["alpha"].spec()["dns"] == []
    found = verdicts({"alpha": results(), "beta": results()}, planned)
    assert found[("alpha", "runtime-dns")] == (
        False,
        "unproven: TRE_DNS_RESOLVER_IP is unset, so notebooks have no resolver to ask",
    )


def test_one_workspace_alone_leaves_cross_project_unproven() -> None:
    planned = rp.plan_probes(["alpha"], {"alpha": "10.88.0.6"}, SETTINGS, API, OUTSIDE, NODES)
    found = verdicts({"alpha": results()}, planned)
    passed, detail = found[("alpha", "runtime-cross-project")]
    assert not passed
    assert detail.startswith("unproven: no other workspace's probe pod ran")


def test_only_loopback_api_server_addresses_leave_it_unproven() -> None:
    planned = rp.plan_probes(["alpha"], {"alpha": "10.88.0.6"}, SETTINGS, API[:1], OUTSIDE, NODES)
    found = verdicts({"alpha": results()}, planned)
    assert found[("alpha", "runtime-apiserver")] == (
        False,
        "unproven: no non-loopback API server address is known",
    )


@pytest.mark.parametrize(
    "message", ["", "Traceback (most recent call last):", "[1, 2]", '{"a": 1}']
)
def test_a_report_that_is_not_the_programs_is_refused(message: str) -> None:
    with pytest.raises(ValueError, match="the probe's report is not"):
        rp.parse_results(message)


# --- pod progress -----------------------------------------------------------------------------


def test_pod_progress_reads_the_status() -> None:
    unscheduled = {
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 Insufficient cpu.",
                }
            ],
        }
    }
    assert rp.pod_progress(unscheduled) == rp.PodProgress(
        False, False, None, "", "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."
    )
    pulling = {
        "status": {
            "phase": "Pending",
            "podIP": "10.88.0.9",
            "containerStatuses": [{"state": {"waiting": {"reason": "ErrImageNeverPull"}}}],
        }
    }
    assert rp.pod_progress(pulling).waiting == "ErrImageNeverPull"
    running = {
        "status": {
            "phase": "Running",
            "podIP": "10.88.0.9",
            "containerStatuses": [{"state": {"running": {}}}],
        }
    }
    assert rp.pod_progress(running) == rp.PodProgress(True, False, "10.88.0.9", "", "phase Running")
    ended = {
        "status": {
            "phase": "Succeeded",
            "podIP": "10.88.0.9",
            "containerStatuses": [{"state": {"terminated": {"message": '{"x": {}}'}}}],
        }
    }
    progress = rp.pod_progress(ended)
    assert (progress.ended, progress.running, progress.message) == (True, False, '{"x": {}}')


# --- the probe program, on 127.0.0.1 ------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[str]:
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/hub/api/" else 404)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_program_reports_connections_and_http_answers(http_server: str) -> None:
    port = int(http_server.rsplit(":", 1)[1])
    found = probe_script.probe(
        {
            "timeout": 2,
            "connect": [
                {"id": "open", "host": "127.0.0.1", "port": port},
                {"id": "closed", "host": "127.0.0.1", "port": closed_port()},
            ],
            "http": [
                {"id": "hub", "url": f"{http_server}/hub/api/"},
                {"id": "other", "url": f"{http_server}/nothing"},
            ],
            "dns": [],
        }
    )
    assert found["open"] == {"connected": True}
    assert found["closed"]["connected"] is False and found["closed"]["error"]
    assert (found["hub"], found["other"]) == ({"status": 200}, {"status": 404})


def test_the_program_retries_an_open_path_until_it_closes_or_settles() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    spec = {
        "timeout": 1,
        "settle": 60,
        "connect": [{"id": "x", "host": "127.0.0.1", "port": port}],
        "http": [],
        "dns": [],
    }
    # the "policy" closes the path a moment later: the retry sees it closed
    threading.Timer(0.6, server.close).start()
    found = probe_script.probe(spec, started=time.monotonic())["x"]
    assert found["connected"] is False and found["open_for"] > 0.5
    # still open after settling: reported as connected
    with socket.create_server(("127.0.0.1", 0)) as server:
        spec["connect"][0]["port"] = server.getsockname()[1]
        spec["settle"] = 0
        assert probe_script.probe(spec)["x"] == {"connected": True}


def test_the_program_reads_the_dns_answer_to_its_own_query() -> None:
    packet = probe_script.dns_query_packet("hub.tre-hub.svc.cluster.local.", 0x1234)
    header, question = packet[:12], packet[12:]
    assert struct.unpack(">HHHHHH", header) == (0x1234, 0x0100, 1, 0, 0, 0)
    assert question == (
        b"\x03hub\x07tre-hub\x03svc\x07cluster\x05local\x00" + struct.pack(">HH", 1, 1)
    )
    nxdomain = struct.pack(">HHHHHH", 0x1234, 0x8183, 1, 0, 0, 0) + question
    assert probe_script.dns_answer(nxdomain, 0x1234) == {"rcode": 3, "answers": 0}
    answered = struct.pack(">HHHHHH", 0x1234, 0x8180, 1, 1, 0, 0) + question
    assert probe_script.dns_answer(answered, 0x1234) == {"rcode": 0, "answers": 1}
    assert "error" in probe_script.dns_answer(answered, 0x4321)  # someone else's answer
    assert "error" in probe_script.dns_answer(packet, 0x1234)  # a query is not an answer
    assert "error" in probe_script.dns_answer(b"\x12", 0x1234)


def test_the_program_prints_one_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    spec = {"mode": "probe", "timeout": 1, "connect": [], "http": [], "dns": []}
    assert probe_script.main(["-c", json.dumps(spec)]) == 0
    assert json.loads(capsys.readouterr().out) == {}


def test_s3_is_tried_at_its_own_address_and_on_every_nodes() -> None:
    remote = SETTINGS.model_copy(update={"s3_endpoint_url": "https://10.70.0.5"})
    assert [(c.label, c.host, c.port) for c in rp.s3_targets(remote, NODES)] == [
        ("S3 10.70.0.5:443", "10.70.0.5", 443),
        ("S3 on node tre-node 10.99.0.1:80", "10.99.0.1", 80),
        ("S3 on node tre-node 10.99.0.1:443", "10.99.0.1", 443),
    ]
    # on a node's own address: named as the endpoint
    local = SETTINGS.model_copy(update={"s3_endpoint_url": "http://10.99.0.1:80"})
    assert [c.label for c in rp.s3_targets(local, NODES)] == [
        "S3 10.99.0.1:80",
        "S3 on node tre-node 10.99.0.1:443",
    ]
    # the dev node's relay serves S3 to pods on the node's port 80
    opened = results(**{"S3 on node tre-node 10.99.0.1:80": {"connected": True}})
    found = verdicts({"alpha": opened, "beta": results()})
    assert found[("alpha", "runtime-s3")] == (False, "S3 on node tre-node 10.99.0.1:80: connected")


def test_without_a_node_or_an_s3_address_the_s3_probe_is_unproven() -> None:
    bare = SETTINGS.model_copy(update={"s3_endpoint_url": None})
    assert rp.s3_targets(bare, NODES) != []  # the nodes' S3 ports, with no endpoint set
    planned = rp.plan_probes(["alpha"], {"alpha": "10.88.0.6"}, bare, API, OUTSIDE, [])
    found = verdicts({"alpha": results()}, planned)
    passed, detail = found[("alpha", "runtime-s3")]
    assert not passed
    assert detail.startswith("unproven: no Ready node")
