"""`tre` starts fast: `tre --help` imports no heavy module, a normal command imports
neither the Kubernetes client library (whose package `__init__` imports
`kubernetes.dynamic` -> `kubernetes_validate` -> `jsonschema`, about 1.5 s) nor boto3, and a
query on the fast path (`provisioner.cli.main.QUERIES`) imports neither typer nor pydantic
(together about 170 ms of CPU, three times kubectl's whole query).

Measured in a fresh interpreter with `python -X importtime`, as a person would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provisioner.cli.main import QUERIES

ROOT = Path(__file__).resolve().parents[2]

# Never on the way of `tre --help`.
HEAVY = (
    "kubernetes",
    "kubernetes_validate",
    "jsonschema",
    "boto3",
    "botocore",
    "urllib3",
    "cryptography",
    "pydantic",
    "pydantic_settings",
    "yaml",
    "provisioner.models.resources",
    "provisioner.planning",
    "provisioner.controller",
    "provisioner.audit",
    "provisioner.storage",
    "provisioner.devcluster",
    "rich",
)
# Never on the way of a command that only talks to the API server.
NEVER_FOR_A_QUERY = (
    "kubernetes",
    "kubernetes_validate",
    "jsonschema",
    "boto3",
    "botocore",
    "provisioner.controller",
    "provisioner.storage",
    "provisioner.audit",
    "provisioner.planning.workspace",
    "rich",
)
# Never on the way of a query the fast path runs.
NEVER_FOR_A_FAST_QUERY = (
    *NEVER_FOR_A_QUERY,
    "typer",
    "click",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "annotated_types",
    "provisioner.cli.app",
    "provisioner.models.resources",
    "provisioner.models.settings",
    "provisioner.models.types",
    "provisioner.planning.approvals",
)


def refusing_kubeconfig(tmp_path: Path) -> dict[str, str]:
    """A kubeconfig whose server refuses connections: the whole path up to the request runs."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return {"KUBECONFIG": str(kubeconfig)}


def imported_by(*args: str, env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "provisioner.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        check=False,
    )
    return {
        line.split("|")[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def offenders(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_help_imports_nothing_heavy() -> None:
    modules = imported_by("--help")
    assert "typer" in modules  # the measurement works
    assert offenders(modules, HEAVY) == []


@pytest.mark.parametrize(
    "command", [["request", "list"], ["workspace", "show", "diabetes-2026"], ["dataset", "list"]]
)
def test_a_query_imports_neither_the_kubernetes_library_nor_boto3(
    tmp_path: Path, command: list[str]
) -> None:
    modules = imported_by(*command, env=refusing_kubeconfig(tmp_path))
    assert "provisioner.kube.http" in modules
    assert offenders(modules, NEVER_FOR_A_QUERY) == []


FAST_QUERIES = [
    ["request", "list"],
    ["request", "list", "--project", "diabetes-2026", "--phase", "Approved"],
    ["request", "show", "diabetes-2026-1a2b3c"],
    ["workspace", "list", "-o", "json"],
    ["-o", "yaml", "workspace", "show", "diabetes-2026"],
    ["--as", "ann", "--as-group", "tre:approvers", "whoami"],
    ["dataset", "list"],
    ["dataset", "show", "cardio-cohort"],
]


def test_the_fast_queries_are_all_measured_here() -> None:
    assert {tuple(c[i : i + len(q.words)]) for c in FAST_QUERIES for q in QUERIES for i in
            range(len(c))} >= {q.words for q in QUERIES}  # fmt: skip


@pytest.mark.parametrize("command", FAST_QUERIES, ids=" ".join)
def test_a_fast_query_imports_neither_typer_nor_pydantic(
    tmp_path: Path, command: list[str]
) -> None:
    modules = imported_by(*command, env=refusing_kubeconfig(tmp_path))
    assert "provisioner.kube.http" in modules  # it went as far as the request
    assert offenders(modules, NEVER_FOR_A_FAST_QUERY) == []
