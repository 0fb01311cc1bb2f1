"""Background processes: the exit code of a child that died is ours to read, whatever else runs."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.devcluster.processes import Process, spawn, wait_ready
from provisioner.errors import DevClusterError


def test_a_child_that_exits_at_once_reports_its_code_after_other_subprocesses_ran(
    tmp_path: Path,
) -> None:
    false = shutil.which("false") or "/bin/false"
    child = spawn("short-lived", [false], tmp_path / "log")
    time.sleep(0.2)  # it has exited, nobody has reaped it yet
    # Any other subprocess call runs the subprocess module's clean-up of adopted children;
    # that must not take our child's exit status.
    subprocess.run(["true"], check=True)
    assert child.exit_code(wait=2.0) == 1
    assert not child.starting()


def test_a_running_child_has_no_exit_code_yet(tmp_path: Path) -> None:
    sleeper = spawn("sleeper", ["sleep", "30"], tmp_path / "log", exe=shutil.which("sleep"))
    try:
        assert sleeper.exit_code() is None
        assert sleeper.alive()
    finally:
        sleeper.stop()
    assert not sleeper.alive()


def test_a_process_caught_mid_exec_is_waited_for_not_reported_dead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen once in CI: a node process, running, looked neither alive nor starting at one poll
    (mid-exec), and the start failed. One such glance must not fail a running process."""
    sleeper = spawn("sleeper", ["sleep", "30"], tmp_path / "log", exe=shutil.which("sleep"))
    glances = iter([False])  # the first look misses it; every later one is the real answer
    real_alive = Process.alive

    def alive(self: Process) -> bool:
        glance = next(glances, None)
        return real_alive(self) if glance is None else glance

    monkeypatch.setattr(Process, "alive", alive)
    monkeypatch.setattr(Process, "starting", lambda self: False)
    polls = iter([False, True])  # ready on the second poll
    try:
        wait_ready(sleeper, lambda: next(polls), timeout=10)
    finally:
        sleeper.stop()


def test_a_process_that_exits_while_starting_is_reported_with_its_code(tmp_path: Path) -> None:
    false = shutil.which("false") or "/bin/false"
    child = spawn("short-lived", [false], tmp_path / "log")
    with pytest.raises(DevClusterError, match="short-lived exited with code 1 while starting"):
        wait_ready(child, lambda: False, timeout=10)
