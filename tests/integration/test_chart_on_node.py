"""The Helm chart installed for real: its pods run on the dev node, and the platform works.

A platform of this module's own: control plane, S3 and a node with its services (the dataset
CSI driver, project storage, the cluster DNS, the notebook and resolver images), but no `tre
install` and no hub of `tre dev`: the chart installs the platform, from the images built
locally from images/*/Dockerfile (imported into the node, never pulled). Traffic goes only to
loopback and to pods.

Behaviours under test:
- `helm install` with the values an operator of this cluster would write (the S3 endpoint
  the nodes reach, k8s-csi-s3, the API server's and S3's addresses narrowed to the node's, the
  evaluation sign-in instead of OIDC): the controller, the hub and its proxy, the airlock and
  the workspace resolver run as pods (Available, never restarted), each from the chart's
  image, in namespaces that enforce Pod Security (`restricted`; the hub's `baseline`);
- the demo's flow against the installed platform, every step by people through `tre` and the
  hub: a steward registers a dataset, a lead files a request, two approvers approve; the
  controller *in its pod* verifies the dataset and makes the workspace Ready; a member signs
  in on the installed hub (through its proxy's Service), starts the project's server, and the
  notebook (spawned by the hub pod's KubeSpawner) reads the dataset byte for byte from its
  read-only mount and resolves the hub's name through the chart's resolver;
- the audit log the controller pod writes verifies, and has the workspace and the notebook
  start in it.

Needs root (the node), helm (`make helm`) and the image builds (`make images`); without them
the tests FAIL saying what is missing (never skip).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from provisioner.airlock.release import ensure_airlock_buckets
from provisioner.audit.log import ensure_audit_bucket, open_audit_log
from provisioner.chart.generate import CHART_DIR
from provisioner.cli.app import app
from provisioner.devcluster.binaries import cache_dir
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.images import DNS, HUB, PLATFORM, build_image
from provisioner.devcluster.node import NODE_IP, pod_s3_url
from provisioner.devcluster.node_services import start_node_services
from provisioner.devcluster.processes import free_port
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client
from provisioner.kube.resources import DATASETS, NAMESPACES, PODS, SERVICES, WORKSPACES
from provisioner.models.settings import Settings
from provisioner.models.types import DatasetCsiDriver
from provisioner.planning.names import namespace_name
from provisioner.storage.s3 import ensure_bucket, s3_client
from tests.integration.test_chart import RELEASE, RELEASE_NAMESPACE, Tools
from tests.integration.test_hub import wait_for
from tests.jupyter_clients import Hub, Notebook
from tests.jupyter_clients import sign_in as sign_in_form

pytestmark = pytest.mark.timeout(1800)  # image builds on a cold cache take minutes

PLATFORM_NAMESPACES = ("tre-system", "tre-hub", "tre-airlock")
PASSWORD = "evaluation-only-password"  # the test cluster's shared sign-in
SECRETS = {
    "audit": "tre-audit-signing-key",
    "s3": "tre-s3",
    "password": "tre-hub-password",
}
APPROVERS = "tre:approvers"
STEWARDS = "tre:stewards"
_RUN = uuid.uuid4().hex[:6]
PROJECT = f"chart-{_RUN}"
DATASET = f"cardio-{_RUN}"
BUCKET = "chart-data"
READY_TIMEOUT = 300.0


def progress(message: str) -> None:
    print(f"[chart-on-node] {message}", flush=True)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    if os.geteuid() != 0:
        pytest.fail("the chart's pods need a node, and a node needs root (CI runs as root)")
    cluster = DevCluster(tmp_path_factory.mktemp("chart-on-node") / "platform")
    cluster.up(progress, node=True)
    try:
        yield cluster
    finally:
        cluster.down(print)


@pytest.fixture(scope="module")
def settings(platform: DevCluster) -> Iterator[Settings]:
    """The operator's view (S3 on this host, the admin kubeconfig) in the module's CLI calls."""
    env = {**platform.env(), "KUBECONFIG": str(platform.kubeconfig)}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield Settings()


@pytest.fixture(scope="module")
def installed(
    platform: DevCluster, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Tools:
    return install_chart(platform, settings, tmp_path_factory.mktemp("helm"))


def install_chart(platform: DevCluster, settings: Settings, home: Path) -> Tools:
    """The chart installed on the node, every platform Deployment Available."""
    start_node_services(platform, settings, progress)
    node = platform.node()
    for image in (PLATFORM, HUB, DNS):
        if not node.has_image(image.ref):
            progress(f"importing {image.ref}")
            node.import_image(build_image(image, cache_dir(), progress))
    s3 = s3_client(settings)
    # What an operator creates before installing: the buckets (the audit bucket locked).
    ensure_audit_bucket(s3, settings.audit_bucket, retention_days=settings.audit_retention_days)
    ensure_airlock_buckets(s3, settings)

    tools = Tools(platform.kubeconfig, home)
    values = home / "values.yaml"
    values.write_text(yaml.safe_dump(operator_values(platform, settings)))
    tools.ok(
        tools.helm(
            "install", RELEASE, str(CHART_DIR), "-n", RELEASE_NAMESPACE, "--create-namespace",
            "-f", str(values),
        )
    )  # fmt: skip
    # The Secrets the chart names (NOTES.txt says which): the pods wait for them.
    key_pem = platform.audit_signing_key_file
    env = platform.env()
    s3_keys = {
        "access-key-id": env["TRE_S3_ACCESS_KEY_ID"],
        "secret-access-key": env["TRE_S3_SECRET_ACCESS_KEY"],
    }
    create_secret(tools, "tre-system", SECRETS["audit"], files={"signing-key": key_pem})
    create_secret(tools, "tre-system", SECRETS["s3"], literals=s3_keys)
    create_secret(tools, "tre-airlock", SECRETS["s3"], literals=s3_keys)
    create_secret(tools, "tre-hub", SECRETS["password"], literals={"password": PASSWORD})
    deadline = time.monotonic() + READY_TIMEOUT
    for namespace in PLATFORM_NAMESPACES:
        while True:
            waited = tools.kubectl(
                "-n", namespace, "wait", "--for=condition=Available", "deployment", "--all",
                "--timeout=10s",
            )  # fmt: skip
            if waited.returncode == 0:
                break
            assert time.monotonic() < deadline, diagnose(tools, namespace, waited.stderr)
    return tools


def operator_values(platform: DevCluster, settings: Settings) -> dict[str, Any]:
    """What an operator of this cluster writes: where its nodes reach S3 and the API server
    (the node's address), its CSI driver, free Service addresses, and, with no identity
    provider here, the evaluation sign-in."""
    api_port = _api_port(platform)
    node = f"{NODE_IP}/32"
    return {
        "images": {"pullPolicy": "Never"},  # imported into the node; nothing can be pulled
        "settings": {
            "s3EndpointUrl": pod_s3_url(),
            "s3Region": settings.s3_region,
            "datasetCsiDriver": DatasetCsiDriver.K8S_CSI_S3.value,
            "auditRetentionDays": settings.audit_retention_days,
            "auditBucket": settings.audit_bucket,
        },
        "controller": {
            "auditSigningKeySecret": SECRETS["audit"],
            "s3CredentialsSecret": SECRETS["s3"],
        },
        "airlock": {"s3CredentialsSecret": SECRETS["s3"], "serviceIp": "10.0.0.12"},
        "hub": {"evaluationPasswordSecret": SECRETS["password"], "serviceIp": "10.0.0.13"},
        "dns": {"replicas": 1, "serviceIp": "10.0.0.11"},
        "networkPolicies": {
            "apiServerCidrs": [node],
            "apiServerPorts": [api_port],
            "s3Cidrs": [node],
            "oidcCidrs": [node],
            "proxyIngressCidrs": [node],
        },
    }


def _api_port(platform: DevCluster) -> int:
    server = yaml.safe_load(platform.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    return int(server.rsplit(":", 1)[1])


def create_secret(
    tools: Tools,
    namespace: str,
    name: str,
    *,
    literals: dict[str, str] | None = None,
    files: dict[str, Path] | None = None,
) -> None:
    args = [f"--from-literal={k}={v}" for k, v in (literals or {}).items()]
    args += [f"--from-file={k}={v}" for k, v in (files or {}).items()]
    tools.ok(tools.kubectl("-n", namespace, "create", "secret", "generic", name, *args))


def diagnose(tools: Tools, namespace: str, why: str) -> str:
    """What a failed wait needs to be understood: the pods, their events and logs."""
    pods = tools.kubectl("-n", namespace, "get", "pods", "-o", "wide").stdout
    events = tools.kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp").stdout
    selector = "app.kubernetes.io/part-of=ucloud-tre"
    logs = tools.kubectl(
        "-n", namespace, "logs", "--all-containers", "--tail=30", "-l", selector, "--prefix"
    ).stdout  # fmt: skip
    return f"{why}\n{pods}\n{events[-4000:]}\n{logs[-6000:]}"


# --- the platform runs as pods -------------------------------------------------------------------


def test_the_platform_runs_as_pods_from_the_charts_images(
    installed: Tools, platform: DevCluster
) -> None:
    admin = Kube(api_client(platform.kubeconfig))
    images = {
        "tre-system": {"tre-controller": PLATFORM.ref, "tre-dns": DNS.ref},
        "tre-hub": {"hub": HUB.ref, "proxy": HUB.ref},
        "tre-airlock": {"tre-airlock": PLATFORM.ref},
    }
    for namespace, expected in images.items():
        ns = admin.get(NAMESPACES, namespace)
        assert ns is not None
        # tre-hub enforces baseline and warns and audits restricted (install.py says why);
        # the chart's own pods meet restricted everywhere (checkov and test_chart check that)
        enforced = "baseline" if namespace == "tre-hub" else "restricted"
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == enforced
        running = {}
        for pod in admin.list(PODS, namespace=namespace):
            assert pod["status"]["phase"] == "Running", pod["status"]
            meta = pod["metadata"]  # the Deployment's name: <deployment>-<template hash>-
            name = meta["generateName"].removesuffix(f"-{meta['labels']['pod-template-hash']}-")
            (container,) = pod["status"]["containerStatuses"]
            running[name] = _normalized(container["image"])
            assert container["ready"] and container["restartCount"] == 0, container
        assert running == expected, namespace


def _normalized(image: str) -> str:
    return image if image.count("/") >= 2 else f"docker.io/{image}"


# --- the demo's flow, against the installed platform ---------------------------------------------


def tre(*args: str, user: str | None = None, group: str | None = None) -> str:
    who = [*(["--as", user] if user else []), *(["--as-group", group] if group else [])]
    result = CliRunner().invoke(app, [*who, *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_request_to_ready_workspace_to_notebook_on_the_installed_platform(
    installed: Tools, platform: DevCluster, settings: Settings, tmp_path: Path
) -> None:
    s3 = s3_client(settings)
    ensure_bucket(s3, BUCKET, versioning=True)
    rows = {f"site-{i}.csv": f"age,readmitted\n{60 + i},1\n".encode() for i in range(2)}
    for name, body in rows.items():
        s3.put_object(Bucket=BUCKET, Key=f"{DATASET}/{name}", Body=body)
    tre(
        "dataset", "register", DATASET, "--title", "Chart test cohort", "--steward", "dana",
        "--classification", "internal", "--bucket", BUCKET, "--prefix", f"{DATASET}/",
        user="dana", group=STEWARDS,
    )  # fmt: skip
    today = dt.date.today()
    request = tmp_path / "request.yaml"
    request.write_text(
        yaml.safe_dump(
            {
                "project": PROJECT,
                "lead": "lena",
                "members": ["lena", "rik"],
                "datasets": [DATASET],
                "purpose": "The chart's flow on a real node.",
                "startDate": today.isoformat(),
                "endDate": (today + dt.timedelta(days=30)).isoformat(),
            }
        )
    )
    name = json.loads(tre("-o", "json", "request", "submit", "-f", str(request), user="lena"))[
        "name"
    ]
    # Nobody runs the controller here but its pod: it verifies the new dataset (approvals pin
    # its manifest, so they wait for it) and then provisions the workspace.
    admin = Kube(api_client(platform.kubeconfig))
    manifest = wait_for(
        lambda: ((admin.get(DATASETS, DATASET) or {}).get("status") or {}).get("manifest"),
        "the controller pod's manifest of the dataset",
        120,
    )
    assert manifest["objectCount"] == len(rows)
    for approver in ("arjen", "bea"):
        tre("request", "approve", name, "-m", "ok", user=approver, group=APPROVERS)

    workspace = wait_for(
        lambda: _ready(admin.get(WORKSPACES, PROJECT)), "the workspace Ready", READY_TIMEOUT
    )
    assert workspace["spec"]["datasets"][0]["name"] == DATASET

    hub_url = expose_proxy(platform, admin)
    hub = Hub(hub_url, sign_in_form(hub_url, "rik", PASSWORD, "test_chart_on_node")[1])
    notebook = start(hub, "rik", PROJECT)
    try:
        seen = notebook.run(
            "import json, os\n"
            f"root = '/data/{DATASET}'\n"
            "print(json.dumps({n: open(os.path.join(root, n)).read() for n in os.listdir(root)}))"
        )
        assert json.loads(seen.strip().splitlines()[-1]) == {k: v.decode() for k, v in rows.items()}
        # The chart's resolver answers the hub's name (the notebook's only nameserver) and
        # nothing else.
        resolved = notebook.run(
            "import socket\n"
            "print(socket.gethostbyname('hub.tre-hub.svc.cluster.local'))\n"
            "try:\n    socket.gethostbyname('example.org'); print('resolved')\n"
            "except socket.gaierror: print('no such name')"
        )
        assert resolved.strip().splitlines() == ["10.0.0.13", "no such name"], resolved
        pod = next(iter(admin.list(PODS, namespace=namespace_name(PROJECT))))
        assert pod["spec"]["dnsConfig"]["nameservers"] == ["10.0.0.11"]
    finally:  # the node's two cores hold few servers: never leave one running
        hub.stop("rik", PROJECT)

    # The controller pod's audit log verifies and has the workspace and the notebook.
    audit = open_audit_log(settings, s3)
    entries = wait_for(
        lambda: _with_start(audit.read_all(), PROJECT), "the notebook start in the audit log", 120
    )
    ready = [e for e in entries if e.action == "workspace.phase" and e.details["phase"] == "Ready"]
    started = [e for e in entries if e.action == "notebook.started"]
    assert ready and started[-1].details["user"] == "rik"
    assert started[-1].details["datasets"] == {DATASET: manifest["sha256"]}
    tre("audit", "verify")


def _ready(workspace: dict[str, Any] | None) -> dict[str, Any] | None:
    if workspace and (workspace.get("status") or {}).get("phase") == "Ready":
        return workspace
    return None


def _with_start(entries: list[Any], project: str) -> list[Any] | None:
    """The entries about `project`'s workspace once its notebook start is among them."""
    ours = [e for e in entries if e.subject == f"workspace/{project}"]
    return ours if any(e.action == "notebook.started" for e in ours) else None


def expose_proxy(platform: DevCluster, admin: Kube) -> str:
    """The proxy's public Service on this host's loopback (people's browsers would reach it
    through an ingress): a relay from 127.0.0.1 into the node, to the Service's ClusterIP."""
    service = admin.get(SERVICES, "proxy-public", "tre-hub")
    assert service is not None
    port = free_port()
    platform.expose_from_node("chart-proxy-relay", port, service["spec"]["clusterIP"], 80)
    return f"http://127.0.0.1:{port}"


def start(hub: Hub, user: str, project: str) -> Notebook:
    """Start the project's server; the hub's Workspace cache may lag the Ready workspace by a
    moment (refused, failing closed), so a refusal is retried briefly."""
    deadline = time.monotonic() + 60
    while True:
        response = hub.start(user, project)
        if response.status_code in (201, 202):
            hub.wait_ready(user, project, READY_TIMEOUT)
            return Notebook(f"{hub.url}/user/{user}/{project}", hub.token)
        assert time.monotonic() < deadline, response.text
        time.sleep(2)
