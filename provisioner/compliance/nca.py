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
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

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
    """The `nca` executable, installed on first use (about 30 s, from the package index).

    Built in a temporary directory and renamed into place, so an interrupted install is never
    taken for a finished one, and two concurrent first runs both end with a working copy.
    """
    home = nca_home()
    executable = home / "bin" / "nca"
    if executable.exists():
        return executable
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{home.name}.", dir=home.parent))
    try:
        _run([sys.executable, "-m", "venv", str(staging)], "create the NCA venv")
        _run(
            [
                str(staging / "bin" / "pip"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(REQUIREMENTS),
            ],
            f"install network-config-analyzer {NCA_VERSION} (pins: {REQUIREMENTS})",
        )
        # console scripts name the venv's path in their #! line: rewrite it for the final home
        for script in (staging / "bin").iterdir():
            if script.is_file() and not script.is_symlink():
                _rehome(script, staging, home)
        try:
            staging.rename(home)
        except OSError:
            if not executable.exists():  # not a concurrent install that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return executable


def _rehome(script: Path, old: Path, new: Path) -> None:
    data = script.read_bytes()
    if data.startswith(b"#!") and str(old).encode() in data[:512]:
        script.write_bytes(data.replace(str(old).encode(), str(new).encode(), 1))


def _run(command: list[str], what: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        output = getattr(exc, "stderr", "") or ""
        raise NcaError(f"could not {what}: {exc}\n{output[-2000:]}") from exc


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
