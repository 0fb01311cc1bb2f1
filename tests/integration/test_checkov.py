"""checkov (pinned, in its own venv) over the chart rendered with every option on, a planned
workspace (S3 and NFS datasets) and the notebook pod the real KubeSpawner, configured by
hub_config, would create in it:

- zero failed checks except the reviewed suppressions (provisioner/compliance/
  checkov-suppressions.yaml), and no suppression left that nothing needs;
- the scan can fail: a privileged container planted among the objects is reported.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.chart.generate import CHART_DIR
from provisioner.compliance.checkov import ensure_checkov, scan
from provisioner.devcluster.binaries import ensure_helm
from provisioner.models.resources import (
    DatasetSource,
    NfsSource,
    S3Source,
    Workspace,
    WorkspaceDataset,
    WorkspacePhase,
    WorkspaceSpec,
    WorkspaceStatus,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier
from provisioner.planning.names import namespace_name
from provisioner.planning.workspace import plan_workspace
from tests.integration.test_chart import ALL_ON
from tests.kubespawner_harness import (
    hub_config_for,
    kubeconfig_to_nowhere,
    make_spawner,
    pod_manifest,
)


@pytest.fixture(scope="module")
def rendered_chart() -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(ensure_helm(print)), "template", "tre", str(CHART_DIR), "-n", "tre-release",
         "-f", str(ALL_ON)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def workspace() -> Workspace:
    datasets = [
        WorkspaceDataset(
            name="census-2024",
            manifest_sha256="a" * 64,
            classification=ClassificationTier.CONFIDENTIAL,
            source=DatasetSource(s3=S3Source(bucket="tre-datasets", prefix="census/2024")),
        ),
        WorkspaceDataset(
            name="admissions",
            manifest_sha256="b" * 64,
            classification=ClassificationTier.SENSITIVE,
            source=DatasetSource(nfs=NfsSource(server="nfs.example.org", path="/exports/adm")),
        ),
    ]
    return Workspace(
        name="cancer-study",
        spec=WorkspaceSpec(
            project="cancer-study",
            namespace=namespace_name("cancer-study"),
            members=["alice", "bob"],
            datasets=datasets,
        ),
        status=WorkspaceStatus(phase=WorkspacePhase.READY),
    )


SETTINGS = Settings(dns_resolver_ip="10.0.0.11")


@pytest.fixture(scope="module")
def planned_workspace(workspace: Workspace) -> list[dict[str, Any]]:
    return plan_workspace(workspace, SETTINGS)


@pytest.fixture
def notebook_pod(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    kubeconfig_to_nowhere(tmp_path / "kubeconfig", monkeypatch)
    config = hub_config_for(SETTINGS, [workspace])

    async def build() -> dict[str, Any]:
        return await pod_manifest(make_spawner(config, "alice", workspace.spec.project))

    pod = asyncio.run(build())
    pod["metadata"]["namespace"] = workspace.spec.namespace  # KubeSpawner sends it apart
    return {"apiVersion": "v1", "kind": "Pod", **pod}


def test_the_chart_and_a_workspace_pass_checkov(
    rendered_chart: list[dict[str, Any]],
    planned_workspace: list[dict[str, Any]],
    notebook_pod: dict[str, Any],
) -> None:
    judgement = scan(
        ensure_checkov(),
        {"chart": rendered_chart, "workspace": [*planned_workspace, notebook_pod]},
    )
    assert judgement.passed > 400
    assert not judgement.unsuppressed, "\n".join(
        f"{f.check_id} {f.check_name}: {f.resource}" for f in judgement.unsuppressed
    )
    assert not judgement.stale, [s.check_id for s in judgement.stale]


def test_a_privileged_container_is_reported(rendered_chart: list[dict[str, Any]]) -> None:
    controller = next(
        d
        for d in rendered_chart
        if d["metadata"]["name"] == "tre-controller" and d["kind"] == "Deployment"
    )
    bad = yaml.safe_load(yaml.safe_dump(controller))
    bad["metadata"]["name"] = "planted"
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    judgement = scan(ensure_checkov(), {"planted": [bad]})
    assert "CKV_K8S_16" in {f.check_id for f in judgement.unsuppressed}
