"""`tre export submit` runs in the notebook, where `tre` is installed without its dependencies.

The notebook image installs this package with `pip install --no-deps` and, beside the analysis
stack, only the few packages the export path imports (images/notebook/requirements.txt). These
tests hold that promise on this machine, so it cannot regress unnoticed until a notebook
fails:

- the whole `tre export submit` command (the `tre` entry point, argument parsing, settings,
  declaring the file, filing the request, streaming the bytes) runs in a fresh interpreter in
  which boto3, botocore, kubernetes and cryptography cannot be imported, and nor can any
  installed distribution outside those the notebook image installs for `tre` (and what they
  require): an import of anything else fails the command;
- what it sends is what the airlock expects: the declaration (normalised path, size, sha256)
  in the request, then the same bytes in the upload, signed with the notebook's token, the
  project and the airlock's address taken from the hub's environment variables;
- the packages the export path needs are pinned in the notebook's requirements at the
  versions of requirements.lock (the versions the tests run on).

The airlock here is a recording HTTP server on 127.0.0.1 speaking the airlock's wire format:
the service itself is proven by tests/integration/test_airlock_service.py and, from inside a
real notebook, by tests/integration/test_notebooks.py.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_REQUIREMENTS = REPO / "images" / "notebook" / "requirements.txt"
# What the notebook image installs for `tre` (the package itself goes in with --no-deps).
EXPORT_REQUIREMENTS = ("pydantic", "pydantic-settings", "pyyaml", "typer")
NEVER_IN_THE_NOTEBOOK = ("boto3", "botocore", "kubernetes", "cryptography")


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[str(canonicalize_name(name))] = version
    return pins


def test_the_export_path_packages_are_pinned_at_the_locked_versions() -> None:
    notebook = _pins(NOTEBOOK_REQUIREMENTS.read_text())
    locked = _pins((REPO / "requirements.lock").read_text())

    for name in EXPORT_REQUIREMENTS:
        assert notebook.get(name) == locked[name], name
    assert not set(NEVER_IN_THE_NOTEBOOK) & set(notebook)


def _closure(names: tuple[str, ...]) -> set[str]:
    """The distributions `names` need, themselves included (no extras), as installed here."""
    seen: set[str] = set()
    todo = [str(canonicalize_name(n)) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for spec in importlib.metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(str(canonicalize_name(requirement.name)))
    return seen


def _top_level_modules(distribution: str) -> set[str]:
    files = importlib.metadata.distribution(distribution).files or []
    found = set()
    for file in files:
        top = file.parts[0]
        if top.endswith((".dist-info", ".data", ".pth")) or top in ("..", "__pycache__"):
            continue
        found.add(top.removesuffix(".py").split(".")[0])
    return found


def allowed_third_party_modules() -> set[str]:
    return {m for d in _closure(EXPORT_REQUIREMENTS) for m in _top_level_modules(d)}


# Run first in the child interpreter: refuse every third-party module the notebook image does
# not install for `tre`, then run the `tre` entry point as the notebook's terminal would.
CHILD = """
import importlib.abc, json, sys
allowed = set(json.loads(sys.argv[1])) | set(sys.stdlib_module_names) | {"provisioner"}
for name in %(never)r:
    sys.modules[name] = None  # `import boto3` raises ImportError from here on

class NotInTheNotebook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top not in allowed and not top.startswith("_"):
            raise ModuleNotFoundError(f"{fullname}: not in the notebook image", name=fullname)
        return None

sys.meta_path.insert(0, NotInTheNotebook())
sys.path.insert(0, %(repo)r)
sys.argv = ["tre", *sys.argv[2:]]
%(then)s
"""
TRE = "from provisioner.cli.main import main; main()"


class RecordingAirlock(BaseHTTPRequestHandler):
    """Answers as the airlock API does, and keeps every request (method, path, headers, body)."""

    calls: list[dict[str, Any]]

    def _record(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.calls.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        return body

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        self._record()
        self._answer(201, {"namespace": "tre-project-cancer-x", "name": "export-1"})

    def do_PUT(self) -> None:
        body = self._record()
        self._answer(200, {"path": self.path.rsplit("/files/", 1)[-1], "size": len(body)})

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def airlock() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    calls: list[dict[str, Any]] = []
    handler = type("Handler", (RecordingAirlock,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/services/airlock/", calls
    finally:
        server.shutdown()
        server.server_close()


def run_in_notebook(
    args: list[str], env: dict[str, str], then: str = TRE
) -> subprocess.CompletedProcess[str]:
    program = CHILD % {"never": NEVER_IN_THE_NOTEBOOK, "repo": str(REPO), "then": then}
    allowed = json.dumps(sorted(allowed_third_party_modules()))
    return subprocess.run(
        [sys.executable, "-c", program, allowed, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_submit_runs_without_cluster_or_s3_clients(
    tmp_path: Path, airlock: tuple[str, list[dict[str, Any]]]
) -> None:
    url, calls = airlock
    project = tmp_path / "project"
    (project / "results").mkdir(parents=True)
    data = b"age_band,readmissions\n18-39,12\n40-64,31\n"
    (project / "results" / "table.csv").write_bytes(data)
    # The notebook's environment as the hub sets it, and nothing of this machine's TRE_* settings.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "JUPYTERHUB_API_TOKEN": "notebook-token-0123456789",
        "TRE_AIRLOCK_URL": url,
        "TRE_PROJECT": "cancer-x",
    }

    result = run_in_notebook(
        [
            "export",
            "submit",
            "./results//table.csv",
            "-d",
            "readmissions by age band",
            "-c",
            "aggregate counts, every cell 10 or more",
            "--root",
            str(project),
            "-o",
            "json",
        ],
        env,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "namespace": "tre-project-cancer-x",
        "name": "export-1",
        "files": ["results/table.csv"],
        "phase": "Submitted",
    }
    filed, uploaded = calls
    assert filed["method"] == "POST"
    assert filed["path"] == "/services/airlock/api/exports"
    assert json.loads(filed["body"]) == {
        "project": "cancer-x",
        "context": "aggregate counts, every cell 10 or more",
        "files": [
            {
                "path": "results/table.csv",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "kind": "output",
                "description": "readmissions by age band",
            }
        ],
    }
    assert uploaded["method"] == "PUT"
    assert uploaded["path"] == (
        "/services/airlock/api/exports/tre-project-cancer-x/export-1/files/results/table.csv"
    )
    assert uploaded["body"] == data
    for call in calls:
        assert call["headers"]["Authorization"] == "token notebook-token-0123456789"


def test_the_guard_refuses_what_the_notebook_lacks(tmp_path: Path) -> None:
    """The guard itself, so the submit test passing means the export path needed nothing else:
    a command that needs boto3 fails, and so does an installed package the notebook lacks."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    controller = run_in_notebook(["controller", "run", "--help"], env)
    dateutil = run_in_notebook([], env, then="import dateutil")
    export_help = run_in_notebook(["export", "submit", "--help"], env)

    assert controller.returncode != 0
    assert "import of boto3 halted" in controller.stderr
    assert dateutil.returncode != 0
    assert "dateutil: not in the notebook image" in dateutil.stderr
    assert export_help.returncode == 0, export_help.stderr
