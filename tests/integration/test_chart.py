"""The Helm chart (helm/ucloud-tre/) with helm built from its module, on a control plane of its
own (the session's platform has `tre install`'s objects, which the chart would clash with).

- `helm lint --strict` passes with every option on (tests/chart/all-on.yaml) and the schema
  refuses an unknown key; a missing required value fails naming the key and the fix; the
  platform's egress CIDRs (API server, S3, identity provider) have no default and no egress
  rule reaches 0.0.0.0/0 or "anywhere";
- the rendered objects, CRDs included, pass the real API server's strict validation (server-
  side dry run, unknown or duplicate fields refused): no schema can be downloaded here, so the
  API server of the pinned Kubernetes is the schema; a planted unknown field is refused;
- `helm install` creates every object; the Deployments' pods pass Pod Security (created, and
  Pending: this platform has no node); the installed policies refuse a request filed in
  someone else's name and a Workspace written by an admin;
- `helm upgrade` with one changed value changes exactly that value in the manifests (and the
  policy then enforces it);
- `helm uninstall` removes the release but keeps the CRDs and Workspaces, tre-system, and
  the policies that guard built-in kinds (kubernetes#130887); a second install adopts them;
- a cluster set up by `tre install` is refused, then adopted with --take-ownership
  --force-conflicts, the chart's values winning.

The tests run in file order on one release: install, then upgrade, then uninstall.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.chart.generate import CHART_DIR
from provisioner.controller.install import install_platform
from provisioner.devcluster.binaries import ensure_helm, pinned_binaries
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.dns import corefile, platform_names
from provisioner.errors import RefusedError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client
from provisioner.kube.resources import WORKSPACES
from provisioner.models.resources import AccessRequest, AccessRequestSpec, Workspace, WorkspaceSpec
from provisioner.models.settings import Settings
from provisioner.models.types import DatasetCsiDriver
from provisioner.planning.names import namespace_name
from provisioner.planning.storage import dataset_driver_objects
from tests.integration.conftest import own_platform, wait_for_policies

ALL_ON = Path(__file__).parents[1] / "chart" / "all-on.yaml"
RELEASE = "tre"
RELEASE_NAMESPACE = "tre-release"
DEPLOYMENTS = {
    "tre-system": {"tre-controller", "tre-dns"},
    "tre-hub": {"hub", "proxy"},
    "tre-airlock": {"tre-airlock"},
}


class Tools:
    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.helm_binary = ensure_helm(print)
        self.kubectl_binary = pinned_binaries().kubectl
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "KUBECONFIG": str(kubeconfig),
            # helm keeps its configuration, cache and plugins here, not in the user's home
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
            "HOME": str(home),
        }

    def run(
        self, binary: Path, *args: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary), *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.helm_binary, *args)

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(self.kubectl_binary, *args, stdin=stdin)

    def ok(self, result: subprocess.CompletedProcess[str]) -> str:
        assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
        return result.stdout


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    yield from own_platform(tmp_path_factory, "chart-platform")


@pytest.fixture(scope="module")
def tools(platform: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Tools:
    return Tools(platform.kubeconfig, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def installed(tools: Tools, platform: DevCluster) -> DevCluster:
    tools.ok(
        tools.helm(
            "install", RELEASE, str(CHART_DIR), "-n", RELEASE_NAMESPACE, "--create-namespace",
            "-f", str(ALL_ON),
        )
    )  # fmt: skip
    return platform


def _manifest(tools: Tools) -> list[str]:
    return tools.ok(tools.helm("get", "manifest", RELEASE, "-n", RELEASE_NAMESPACE)).splitlines()


# --- without a release -------------------------------------------------------------------------


def test_lint_strict_passes_with_every_option_on(tools: Tools) -> None:
    result = tools.helm("lint", "--strict", str(CHART_DIR), "-f", str(ALL_ON))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_the_schema_refuses_an_unknown_key(tools: Tools) -> None:
    result = tools.helm(
        "lint", "--strict", str(CHART_DIR), "-f", str(ALL_ON), "--set", "hub.replicas=2"
    )
    assert result.returncode != 0
    assert "replicas" in result.stdout + result.stderr


def test_a_missing_value_fails_naming_the_key_and_the_fix(tools: Tools) -> None:
    result = tools.helm(
        "template", RELEASE, str(CHART_DIR), "-n", RELEASE_NAMESPACE, "-f", str(ALL_ON),
        "--set", "controller.auditSigningKeySecret=",
    )  # fmt: skip
    assert result.returncode != 0
    assert "controller.auditSigningKeySecret: name the Secret in tre-system" in result.stderr
    result = tools.helm("template", RELEASE, str(CHART_DIR), "-n", "tre-system", "-f", str(ALL_ON))
    assert "install the release into a namespace of its own" in result.stderr


EGRESS_CIDRS = ("apiServerCidrs", "s3Cidrs", "oidcCidrs")


def test_the_platforms_egress_goes_only_where_the_operator_names(tools: Tools) -> None:
    """Review 3, S14: no egress destination has a default (0.0.0.0/0 on 443 would let a
    compromised airlock, hub or controller send data anywhere). Without one, the chart refuses
    to render, naming the value; an empty list is never rendered (a rule without peers
    allows every destination). With the evaluation password the hub has no OIDC egress."""
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["networkPolicies"]
    assert all(defaults[key] == [] for key in EGRESS_CIDRS), defaults
    args = ["template", RELEASE, str(CHART_DIR), "-n", RELEASE_NAMESPACE, "-f", str(ALL_ON)]
    for key in EGRESS_CIDRS:
        for unset in (("--set", f"networkPolicies.{key}=null"),
                      ("--set-json", f"networkPolicies.{key}=[]")):  # fmt: skip
            result = tools.helm(*args, *unset)
            assert result.returncode != 0, unset
            assert f"networkPolicies.{key}: required: the addresses (CIDRs)" in result.stderr, (
                unset, result.stderr
            )  # fmt: skip
        blank = tools.helm(*args, "--set", f"networkPolicies.{key}={{}}")  # helm's [""]
        assert blank.returncode != 0
        assert key in blank.stderr and "does not match pattern" in blank.stderr, blank.stderr
    rendered = tools.ok(tools.helm(*args))
    for policy in yaml.safe_load_all(rendered):
        if policy and policy["kind"] == "NetworkPolicy":
            for rule in policy["spec"].get("egress", []):
                assert rule.get("to"), (policy["metadata"]["name"], rule)  # never "anywhere"
                cidrs = {p["ipBlock"]["cidr"] for p in rule["to"] if "ipBlock" in p}
                assert "0.0.0.0/0" not in cidrs, policy["metadata"]["name"]
    evaluation = [
        "--set", "hub.evaluationPasswordSecret=tre-hub-password",
        "--set", "hub.oidcClientSecretSecret=", "--set", "settings.hubOidcIssuer=null",
        "--set", "settings.hubOidcClientId=null", "--set", "settings.hubOidcCallbackUrl=null",
        "--set", "settings.hubOidcAllowedGroup=null", "--set", "networkPolicies.oidcCidrs=null",
    ]  # fmt: skip
    hub_policy = next(
        d for d in yaml.safe_load_all(tools.ok(tools.helm(*args, *evaluation)))
        if d and d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "hub"
    )  # fmt: skip
    assert all(rule.get("to") for rule in hub_policy["spec"]["egress"])
    assert not [r for r in hub_policy["spec"]["egress"] if r.get("ports") == [
        {"protocol": "TCP", "port": 443}] and all("ipBlock" in p for p in r["to"])]  # fmt: skip


def test_the_evaluation_password_is_refused_beside_oidc(tools: Tools) -> None:
    """The shared password replaces OIDC; a values file with both is refused, naming the key
    (the hub would also refuse to start), and without OIDC it renders."""
    args = ["template", RELEASE, str(CHART_DIR), "-n", RELEASE_NAMESPACE, "-f", str(ALL_ON)]
    password = ["--set", "hub.evaluationPasswordSecret=tre-hub-password"]
    both = tools.helm(*args, *password)
    assert both.returncode != 0
    assert "settings.hubOidcIssuer: hub.evaluationPasswordSecret replaces OIDC" in both.stderr
    no_oidc = [
        "--set", "hub.oidcClientSecretSecret=", "--set", "settings.hubOidcIssuer=null",
        "--set", "settings.hubOidcClientId=null", "--set", "settings.hubOidcCallbackUrl=null",
        "--set", "settings.hubOidcAllowedGroup=null",
    ]  # fmt: skip
    rendered = tools.ok(tools.helm(*args, *password, *no_oidc))
    hub = next(
        d for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "hub"
    )  # fmt: skip
    env = {
        e["name"]: e.get("value") for e in hub["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TRE_HUB_DEV_AUTHENTICATOR"] == "true"
    # the hub refuses its dev sign-in beside any OIDC variable, defaults included
    assert not [name for name in env if name.startswith("TRE_HUB_OIDC_")]


def _rendered(tools: Tools, kind: str, name: str) -> dict[str, Any]:
    """One object of the chart rendered with every option on."""
    rendered = tools.ok(
        tools.helm("template", RELEASE, str(CHART_DIR), "-n", RELEASE_NAMESPACE, "-f", str(ALL_ON))
    )
    return next(
        d for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == kind and d["metadata"]["name"] == name
    )  # fmt: skip


def test_the_pods_environment_is_what_the_values_say(
    tools: Tools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TRE_* variables are the interface between values and pods: read them as the
    controller does (pydantic-settings from the environment), JSON lists and maps included."""
    controller = _rendered(tools, "Deployment", "tre-controller")
    env = controller["spec"]["template"]["spec"]["containers"][0]["env"]
    for name in [n for n in os.environ if n.startswith("TRE_")]:
        monkeypatch.delenv(name)
    for variable in env:
        if "value" in variable:
            monkeypatch.setenv(variable["name"], variable["value"])
    settings = Settings()
    assert settings.approver_group == "dac:approvers"
    assert settings.max_request_days == 180
    assert settings.two_approver_tier.value == "internal"
    assert settings.airlock_max_file_bytes == 1 << 30
    assert settings.hub_oidc_scopes == ["openid", "profile", "email", "groups"]
    assert str(settings.dns_resolver_ip) == "10.0.0.11"
    assert settings.audit_signing_key_file == Path("/var/run/secrets/tre/audit/signing-key")
    secrets = {v["name"] for v in env if "valueFrom" in v}
    assert secrets == {"TRE_S3_ACCESS_KEY_ID", "TRE_S3_SECRET_ACCESS_KEY"}


def test_the_resolver_table_is_the_local_nodes_with_the_service_addresses(tools: Tools) -> None:
    configmap = _rendered(tools, "ConfigMap", "tre-dns")
    names = platform_names(Settings(), "10.0.0.13", "10.0.0.12")
    assert configmap["data"]["Corefile"] == corefile("0.0.0.0", 53, names)


def test_the_k8s_csi_s3_objects_are_the_planners(tools: Tools) -> None:
    """templates/dataset-driver.yaml is written by hand (its Secret holds the endpoint
    base64-encoded): with k8s-csi-s3 it renders exactly what `tre install` plans, and with
    Mountpoint nothing."""
    endpoint, region = "http://10.99.0.1:80", "eu-north-1"
    args = ["template", RELEASE, str(CHART_DIR), "-n", RELEASE_NAMESPACE, "-f", str(ALL_ON)]
    csi_s3 = [
        "--set", f"settings.datasetCsiDriver={DatasetCsiDriver.K8S_CSI_S3.value}",
        "--set", f"settings.s3EndpointUrl={endpoint}", "--set", f"settings.s3Region={region}",
    ]  # fmt: skip
    rendered = list(yaml.safe_load_all(tools.ok(tools.helm(*args, *csi_s3))))
    planned = dataset_driver_objects(
        Settings(
            dataset_csi_driver=DatasetCsiDriver.K8S_CSI_S3,
            s3_endpoint_url=endpoint,
            s3_region=region,
        )
    )
    for obj in planned:
        (found,) = [
            d for d in rendered
            if d and d["kind"] == obj["kind"] and d["metadata"]["name"] == obj["metadata"]["name"]
        ]  # fmt: skip
        assert found == obj
    default = tools.ok(tools.helm(*args))
    assert "kind: CSIDriver" not in default
    assert not [
        d for d in yaml.safe_load_all(default) if d and d["metadata"]["name"] == "tre-dataset-s3"
    ]


# --- install -------------------------------------------------------------------------------------


def test_install_creates_the_platform_and_its_pods_pass_pod_security(
    tools: Tools, installed: DevCluster
) -> None:
    crds = json.loads(tools.ok(tools.kubectl("get", "crd", "-o", "json")))["items"]
    assert {c["metadata"]["name"] for c in crds} >= {
        "datasets.tre.ucloud.org",
        "accessrequests.tre.ucloud.org",
        "workspaces.tre.ucloud.org",
        "exportrequests.tre.ucloud.org",
    }
    for namespace, names in DEPLOYMENTS.items():
        got = tools.ok(
            tools.kubectl(
                "get", "deploy", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}"
            )
        )
        assert set(got.split()) == names
    services = tools.ok(
        tools.kubectl(
            "get",
            "svc",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.clusterIP} {end}",
        )
    )
    assert {"tre-dns=10.0.0.11", "hub=10.0.0.13", "tre-airlock=10.0.0.12"} <= set(services.split())
    # Every Deployment's pods were admitted (Pod Security restricted in tre-system and
    # tre-airlock, baseline in tre-hub): a refused pod would leave its ReplicaSet without one.
    _every_deployment_has_a_pod(tools)
    # ... and so are they once tre-platform-peer-pods is active (it loads a moment after the
    # install): the hub, proxy, airlock and resolver run as the accounts their labels need.
    impostor = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "impostor", "namespace": "tre-hub", "labels": {"component": "hub"}},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/none:1"}]},
    }
    deadline = time.monotonic() + 30
    while True:
        dry_run = tools.kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(impostor))
        if dry_run.returncode != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "tre-platform-peer-pods" in dry_run.stderr, dry_run.stderr
    for namespace in DEPLOYMENTS:
        tools.ok(tools.kubectl("delete", "pods", "--all", "-n", namespace, "--wait=false"))
    _every_deployment_has_a_pod(tools)


def _every_deployment_has_a_pod(tools: Tools) -> None:
    deadline = time.monotonic() + 30
    while True:
        pods = json.loads(tools.ok(tools.kubectl("get", "pods", "-A", "-o", "json")))["items"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        owners = {
            (p["metadata"]["namespace"], p["metadata"]["name"].rsplit("-", 2)[0]) for p in live
        }
        wanted = {(ns, name) for ns, names in DEPLOYMENTS.items() for name in names}
        if wanted <= owners or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert wanted <= owners, tools.kubectl("get", "events", "-A").stdout
    assert all(p["status"]["phase"] == "Pending" for p in live)  # no node here: never run


def test_the_installed_policies_refuse_a_request_in_someone_elses_name(
    installed: DevCluster,
) -> None:
    wait_for_policies(Kube(api_client(installed.kubeconfig, as_user="probe-user")))


def test_nobody_but_the_controller_writes_a_workspace_admins_included(
    installed: DevCluster,
) -> None:
    admin = Kube(api_client(installed.kubeconfig))
    forged = Workspace(
        name="forged",
        spec=WorkspaceSpec(project="forged", namespace=namespace_name("forged"), members=["eve"]),
    )
    with pytest.raises(RefusedError, match="controller"):
        admin.create(forged.to_object(), dry_run=True)


def test_every_rendered_object_passes_strict_server_validation(
    tools: Tools, installed: DevCluster
) -> None:
    rendered = tools.ok(
        tools.helm(
            "template", RELEASE, str(CHART_DIR), "-n", RELEASE_NAMESPACE, "--include-crds",
            "-f", str(ALL_ON),
        )
    )  # fmt: skip
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    assert len(documents) > 90
    validate = (
        "apply", "--server-side", "--dry-run=server", "--validate=strict", "--force-conflicts",
        "--field-manager=chart-validation", "-f", "-",
    )  # fmt: skip
    out = tools.ok(tools.kubectl(*validate, stdin=rendered))
    assert out.count("(server dry run)") == len(documents)
    # The check can fail: one unknown field in one object is refused.
    broken = [_with_unknown_field(d) if d["kind"] == "Deployment" else d for d in documents]
    result = tools.kubectl(*validate, stdin=yaml.safe_dump_all(broken))
    assert result.returncode != 0
    assert ".spec.replicass: field not declared in schema" in result.stderr


def _with_unknown_field(deployment: dict[str, Any]) -> dict[str, Any]:
    return {**deployment, "spec": {**deployment["spec"], "replicass": 1}}


# --- upgrade and uninstall (in this order, on the release installed above) ---------------------


def _request(days: int) -> dict[str, Any]:
    today = dt.date.today()
    return AccessRequest(
        name=f"long-{days}",
        spec=AccessRequestSpec(
            project="longstudy",
            requester="alice",
            lead="alice",
            members=["alice"],
            datasets=["cohort"],
            purpose="a request of a given length",
            start_date=today,
            end_date=today + dt.timedelta(days=days),
        ),
    ).to_object()


def test_upgrade_with_a_changed_value_changes_exactly_that(
    tools: Tools, installed: DevCluster
) -> None:
    alice = Kube(api_client(installed.kubeconfig, as_user="alice"))
    alice.create(_request(100), dry_run=True)  # all-on allows 180 days
    before = _manifest(tools)
    tools.ok(
        tools.helm(
            "upgrade", RELEASE, str(CHART_DIR), "-n", RELEASE_NAMESPACE, "-f", str(ALL_ON),
            "--set", "settings.maxRequestDays=60",
        )
    )  # fmt: skip
    after = _manifest(tools)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    # the create policy's rule and message, and TRE_MAX_REQUEST_DAYS of the three pods' env
    assert len(changed) >= 5
    for old, new in changed:
        assert old.replace("180", "60") == new, (old, new)
    deadline = time.monotonic() + 30
    while True:
        try:
            alice.create(_request(100), dry_run=True)
        except RefusedError as exc:
            assert "must be within 60 days" in str(exc)
            break
        assert time.monotonic() < deadline, "the upgraded policy was not enforced within 30s"
        time.sleep(0.25)


def test_uninstall_keeps_crds_workspaces_and_the_audit_namespace(
    tools: Tools, installed: DevCluster
) -> None:
    controller = Kube(api_client(installed.kubeconfig, as_user=Settings().controller_user))
    workspace = Workspace(
        name="kept",
        spec=WorkspaceSpec(project="kept", namespace=namespace_name("kept"), members=["alice"]),
    )
    controller.create(workspace.to_object())
    # --wait: until every deleted object, the hub's and airlock's namespaces included, is gone
    tools.ok(tools.helm("uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait", "--timeout=90s"))
    assert tools.kubectl("get", "namespace", "tre-hub").returncode != 0
    assert tools.helm("status", RELEASE, "-n", RELEASE_NAMESPACE).returncode != 0
    admin = Kube(api_client(installed.kubeconfig))
    assert admin.get(WORKSPACES, "kept") is not None
    assert tools.kubectl("get", "namespace", "tre-system").returncode == 0
    for kept in ("tre-pod-requires-deny-all", "tre-pod-workspace-access"):
        tools.ok(tools.kubectl("get", "validatingadmissionpolicybinding", kept))
    gone = tools.kubectl("get", "validatingadmissionpolicy", "tre-workspace-controller-only")
    assert gone.returncode != 0
    assert tools.ok(tools.kubectl("get", "deploy", "-A", "-o", "name")) == ""
    # A second install adopts what the first one kept.
    tools.ok(
        tools.helm(
            "install", RELEASE, str(CHART_DIR), "-n", RELEASE_NAMESPACE, "-f", str(ALL_ON),
        )
    )  # fmt: skip
    assert admin.get(WORKSPACES, "kept") is not None


def test_a_cluster_set_up_by_tre_install_is_adopted(tools: Tools, installed: DevCluster) -> None:
    tools.ok(tools.helm("uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait", "--timeout=90s"))
    install_platform(Kube(api_client(installed.kubeconfig)), Settings(), print)
    refused = tools.helm(
        "install", RELEASE, str(CHART_DIR), "-n", RELEASE_NAMESPACE, "-f", str(ALL_ON)
    )
    assert "exists and cannot be imported into the current release" in refused.stderr
    tools.ok(
        tools.helm(
            "install", RELEASE, str(CHART_DIR), "-n", RELEASE_NAMESPACE, "-f", str(ALL_ON),
            "--take-ownership", "--force-conflicts",
        )
    )  # fmt: skip
    subjects = tools.ok(
        tools.kubectl(
            "get", "clusterrolebinding", "tre-approver", "-o", "jsonpath={.subjects[*].name}"
        )
    )
    assert subjects == "dac:approvers"  # the chart's value, not tre install's default
