"""`make demo` on a fresh platform of its own: it succeeds, prints no `error:` line (it no
longer probes with `tre ... show` before creating), and each command's progress appears
before its result, in the order things happen; it ends with JupyterHub answering at the URL
it prints (and `tre dev env` exports as TRE_HUB_URL), a second run finds the hub running, and
stopping the platform stops the hub, its proxy and the hub's idle culler with everything
else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.processes import children_of

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_demo_is_quiet_and_in_order(tmp_path: Path) -> None:
    state = tmp_path / "demo-platform"
    env = {**os.environ, "TRE_DEV_DIR": str(state), "PYTHONPATH": str(ROOT)}
    try:
        first = subprocess.run(
            [sys.executable, "-m", "provisioner.demo"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False,
            # as from a non-interactive shell's background job (CI): interrupts ignored, which
            # the hub's services inherit, so the hub alone cannot stop them in time
            preexec_fn=_ignore_interrupts,
        )  # fmt: skip
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        lines = first.stdout.splitlines()
        assert [line for line in lines if "error:" in line.lower()] == []
        # progress of `tre install` (its standard error) comes before its result
        applied = next(i for i, line in enumerate(lines) if "tre install: applied" in line)
        assert applied < lines.index("  installed")
        assert "ok: " in first.stdout and "chain intact" in first.stdout
        hub_url = next(
            line.split()[2] for line in lines if line.startswith("  the hub:  http://127.0.0.1:")
        )
        with urllib.request.urlopen(f"{hub_url}hub/api/", timeout=10) as answer:
            assert answer.status == 200
        exported = subprocess.run(
            [sys.executable, "-m", "provisioner.cli.main", "dev", "env"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert f"export TRE_HUB_URL={hub_url.rstrip('/')}\n" in exported
        # again on the running platform: still no error, nothing filed twice
        again = subprocess.run(
            [sys.executable, "-m", "provisioner.demo"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False,
        )  # fmt: skip
        assert again.returncode == 0, again.stdout[-3000:]
        assert "error:" not in again.stdout.lower()
        assert "request heart-failure-ml-demo is filed and decided already" in again.stdout
        assert f"hub already running at {hub_url.rstrip('/')}" in again.stdout
    finally:
        cluster = DevCluster(state)
        started = cluster.processes()
        # what the processes started themselves: the hub's idle culler, in its own session
        started += [child for proc in started for child in children_of(proc)]
        cluster.down(lambda _: None, purge=True)
    # `tre dev down` stops every recorded process by pid, the hub and its proxy included, and
    # what they started
    assert {"jupyterhub", "configurable-http-proxy", "jupyterhub child"} <= {
        p.name for p in started
    }
    assert [p.name for p in started if p.alive()] == []
