"""Background processes: the exit code of a child that died is ours to read, whatever else runs."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from provisioner.devcluster.processes import spawn


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
