"""A Python tool in a venv of its own under the cache, installed once from pinned requirements.

Analysis tools (network-config-analyzer, checkov) pin libraries that clash with ours, so each
lives in `$TRE_CACHE_DIR/<name>-<version>/` and runs as a subprocess on files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from provisioner.errors import TreError


def ensure_tool_venv(
    home: Path, requirements: Path, executable: str, what: str, error: type[TreError]
) -> Path:
    """`home`/bin/`executable`, installed on first use from `requirements`.

    Built in a temporary directory and renamed into place, so an interrupted install is never
    taken for a finished one, and two concurrent first runs both end with a working copy.
    Failures raise `error` naming `what`.
    """
    target = home / "bin" / executable
    if target.exists():
        return target
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{home.name}.", dir=home.parent))
    try:
        _run([sys.executable, "-m", "venv", str(staging)], f"create the venv of {what}", error)
        _run(
            [
                str(staging / "bin" / "pip"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(requirements),
            ],
            f"install {what} (pins: {requirements})",
            error,
        )
        # console scripts name the venv's path in their #! line: rewrite it for the final home
        for script in (staging / "bin").iterdir():
            if script.is_file() and not script.is_symlink():
                _rehome(script, staging, home)
        try:
            staging.rename(home)
        except OSError:
            if not target.exists():  # not a concurrent install that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _rehome(script: Path, old: Path, new: Path) -> None:
    data = script.read_bytes()
    if data.startswith(b"#!") and str(old).encode() in data[:512]:
        script.write_bytes(data.replace(str(old).encode(), str(new).encode(), 1))


def _run(command: list[str], what: str, error: type[TreError]) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        output = getattr(exc, "stderr", "") or ""
        raise error(f"could not {what}: {exc}\n{output[-2000:]}") from exc
