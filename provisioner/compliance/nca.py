"""network-config-analyzer (NCA) in a venv of its own, and one run of it.

NCA pins libraries older than ours (networkx, PyYAML, lxml), so it never shares the project's
environment: `ensure_nca()` creates `$TRE_CACHE_DIR/nca-<version>/` on first use from the
pins in nca-requirements.txt (`make nca` does the same ahead of the tests), and the check runs
it as a subprocess on files. It is always given the pods and namespaces to analyse: without
them NCA would ask a cluster through kubectl, which is not what we mean to prove.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from provisioner.compliance.tool_venv import ensure_tool_venv
from provisioner.devcluster.binaries import cache_dir
from provisioner.errors import TreError

NCA_VERSION: Final = "2.1.0"
REQUIREMENTS: Final = Path(__file__).with_name("nca-requirements.txt")
TIMEOUT_SECONDS: Final = 300.0


class NcaError(TreError):
    """NCA could not be installed or did not produce a connectivity map."""


def nca_home() -> Path:
    return cache_dir() / f"nca-{NCA_VERSION}"


def ensure_nca() -> Path:
    """The `nca` executable, installed on first use (about 30 s, from the package index)."""
    what = f"network-config-analyzer {NCA_VERSION}"
    return ensure_tool_venv(nca_home(), REQUIREMENTS, "nca", what, NcaError)


def connectivity(
    nca: Path,
    policies: list[dict[str, Any]],
    namespaces: list[dict[str, Any]],
    pods: list[dict[str, Any]],
) -> str:
    """NCA's connectivity map (`txt_no_fw_rules`: one line per pair of endpoints) of
    `policies` over `pods` in `namespaces`."""
    with tempfile.TemporaryDirectory(prefix="tre-check-") as tmp:
        files = {
            "policies.json": _list("NetworkPolicyList", "networking.k8s.io/v1", policies),
            "namespaces.json": _list("NamespaceList", "v1", namespaces),
            "pods.json": _list("PodList", "v1", pods),
        }
        for name, content in files.items():
            (Path(tmp) / name).write_text(json.dumps(content))
        command = [
            str(nca),
            "--connectivity",
            f"{tmp}/policies.json",
            "--ns_list",
            f"{tmp}/namespaces.json",
            "--pod_list",
            f"{tmp}/pods.json",
            "--output_format",
            "txt_no_fw_rules",
        ]
        try:
            done = subprocess.run(
                command,
                check=False,  # the exit code is judged below, with NCA's output
                capture_output=True,
                text=True,
                timeout=TIMEOUT_SECONDS,
                # no kubeconfig: NCA must analyse the files, never ask a cluster
                env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise NcaError(f"network-config-analyzer did not run: {exc}") from exc
    if done.returncode != 0 or "=>" not in done.stdout:
        raise NcaError(
            f"network-config-analyzer exited {done.returncode} without a connectivity map: "
            f"{(done.stderr or done.stdout)[-2000:]}"
        )
    return done.stdout


def _list(kind: str, api_version: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    # Only what NCA reads: the API server's bookkeeping (managedFields, uid) is noise to it.
    clean = [
        {
            **item,
            "metadata": {
                k: v for k, v in item["metadata"].items() if k in ("name", "namespace", "labels")
            },
        }
        for item in items
    ]
    return {"apiVersion": api_version, "kind": kind, "items": clean}


if __name__ == "__main__":  # `make nca`
    sys.stdout.write(f"{ensure_nca()}\n")
