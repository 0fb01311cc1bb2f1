"""The browser gate's image (images/gate): one definition, its Dockerfile, which the local build
follows like the resolver's (provisioner.devcluster.dockerfile.go_image_recipe).

Behaviours under test:
- the recipe, golden: the golang base the platform builds with, the gate's module COPYed in,
  one static `go build`, the binary alone in an empty runtime, run as the gate's own user
  (10002, not the notebook's 1000) on the notebook pod's port;
- the image is the one the hub asks for (notebook_pods.GATE_IMAGE, this release's tag);
- the module has no dependencies (standard library only: nothing to download or pin);
- the hub's gate container and the image agree: the uid, the port, a read-only root.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from provisioner.devcluster.dockerfile import Copy, GoBuild, GoImageRecipe, go_image_recipe
from provisioner.devcluster.images import GATE
from provisioner.models.rules import ClassificationTier
from provisioner.models.settings import Settings
from provisioner.planning import notebook_pods

REPO = Path(__file__).resolve().parents[2]


def test_gate_recipe() -> None:
    recipe = go_image_recipe(GATE.dockerfile.read_text())

    assert recipe == GoImageRecipe(
        base="golang:1.26.8-trixie",
        go_version="1.26.8",
        copies=(Copy("images/gate/", "/src"),),
        go_build=GoBuild(
            directory="/src",
            env=(("CGO_ENABLED", "0"), ("GOFLAGS", "-buildvcs=false -mod=readonly")),
            flags=("-trimpath", "-ldflags=-s -w"),
            output="/out/gate",
        ),
        binaries=(("/out/gate", "/gate"),),
        runtime_config={
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "User": f"{notebook_pods.GATE_UID}:{notebook_pods.GATE_UID}",
            "ExposedPorts": {f"{Settings().notebook_port}/tcp": {}},
            "Entrypoint": ["/gate"],
        },
    )


def test_the_image_is_the_one_the_hub_asks_for() -> None:
    assert f"docker.io/{notebook_pods.GATE_IMAGE}" == GATE.ref


def test_the_module_is_the_standard_library_only() -> None:
    gomod = (GATE.source_dir / "go.mod").read_text()

    assert "require" not in gomod
    assert not (GATE.source_dir / "go.sum").exists()
    assert re.search(r"^go 1\.26\.\d+$", gomod, re.MULTILINE)


def test_the_gate_container_runs_as_the_image_says_with_a_read_only_root() -> None:
    settings = Settings()
    gate = notebook_pods.gate_container(
        settings,
        user="rik",
        project="heart",
        prefix="/user/rik/heart/",
        tier=ClassificationTier.SENSITIVE,
    )
    security = gate["securityContext"]
    env = {e["name"]: e["value"] for e in gate["env"]}

    assert security["runAsUser"] == security["runAsGroup"] == notebook_pods.GATE_UID
    assert notebook_pods.GATE_UID != notebook_pods.NOTEBOOK_UID
    assert security["readOnlyRootFilesystem"] is True
    assert env["GATE_LISTEN"] == f":{settings.notebook_port}"
    assert env["GATE_UPSTREAM"] == f"127.0.0.1:{settings.notebook_server_port}"
    limits = settings.browser_limits_by_tier[ClassificationTier.SENSITIVE]
    assert env["GATE_READ_CAP"] == str(limits.read_cap_mib << 20)
    assert env["GATE_CONTENT_BUDGET"] == str(limits.content_budget_mib << 20)
    assert gate["image"] == notebook_pods.GATE_IMAGE


def test_the_highest_tiers_are_the_strictest_by_default() -> None:
    limits = Settings().browser_limits_by_tier
    ordered = [limits[tier] for tier in ClassificationTier]  # least to most sensitive

    for looser, stricter in itertools.pairwise(ordered):
        assert stricter.read_cap_mib <= looser.read_cap_mib
        assert stricter.content_budget_mib <= looser.content_budget_mib
        assert stricter.upload_cap_mib <= looser.upload_cap_mib
