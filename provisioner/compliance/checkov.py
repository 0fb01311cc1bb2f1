"""checkov (static security checks of Kubernetes manifests) in a venv of its own, one scan, and
the judgement of its findings against our reviewed suppressions.

The chart (rendered with every option on) and a planned workspace must pass with zero failed
checks, or each failure must match a suppression in checkov-suppressions.yaml beside this
file, which says why the check does not apply. A suppression that no longer matches any
finding is reported as stale, so the list never outlives its reasons.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from provisioner.compliance.tool_venv import ensure_tool_venv
from provisioner.devcluster.binaries import cache_dir
from provisioner.errors import TreError

CHECKOV_VERSION: Final = "3.3.30"
REQUIREMENTS: Final = Path(__file__).with_name("checkov-requirements.txt")
SUPPRESSIONS: Final = Path(__file__).with_name("checkov-suppressions.yaml")
TIMEOUT_SECONDS: Final = 300.0


class CheckovError(TreError):
    """checkov could not be installed or did not produce a report."""


@dataclass(frozen=True)
class Finding:
    check_id: str
    check_name: str
    resource: str  # Kind.namespace.name, as checkov names it
    file: str


@dataclass(frozen=True)
class Suppression:
    check_id: str
    resources: tuple[str, ...]  # fnmatch patterns over Finding.resource
    reason: str

    def matches(self, finding: Finding) -> bool:
        return finding.check_id == self.check_id and any(
            fnmatch.fnmatchcase(finding.resource, pattern) for pattern in self.resources
        )


@dataclass(frozen=True)
class Judgement:
    passed: int
    unsuppressed: list[Finding]
    suppressed: list[Finding]
    stale: list[Suppression]

    @property
    def ok(self) -> bool:
        return not self.unsuppressed and not self.stale


def checkov_home() -> Path:
    return cache_dir() / f"checkov-{CHECKOV_VERSION}"


def ensure_checkov() -> Path:
    """The `checkov` executable, installed on first use (about 30 s, from the package index)."""
    return ensure_tool_venv(
        checkov_home(), REQUIREMENTS, "checkov", f"checkov {CHECKOV_VERSION}", CheckovError
    )


def load_suppressions(text: str) -> list[Suppression]:
    """Parse checkov-suppressions.yaml: `CHECK_ID: {reason: ..., resources: [pattern, ...]}`.

    Every suppression needs a reason and at least one resource pattern: a check is never
    switched off for everything.
    """
    data = yaml.safe_load(text) or {}
    suppressions = []
    for check_id, entry in data.items():
        reason = str((entry or {}).get("reason", "")).strip()
        resources = tuple((entry or {}).get("resources") or ())
        if not reason or not resources:
            raise CheckovError(
                f"checkov-suppressions.yaml: {check_id} needs a `reason` and `resources` "
                "(the resources it applies to, as Kind.namespace.name patterns)"
            )
        suppressions.append(Suppression(check_id, resources, reason))
    return suppressions


def judge(passed: int, failed: Sequence[Finding], suppressions: Sequence[Suppression]) -> Judgement:
    unsuppressed = [f for f in failed if not any(s.matches(f) for s in suppressions)]
    suppressed = [f for f in failed if f not in unsuppressed]
    stale = [s for s in suppressions if not any(s.matches(f) for f in failed)]
    return Judgement(passed, unsuppressed, suppressed, stale)


def scan(checkov: Path, manifests: Mapping[str, Sequence[Mapping[str, Any]]]) -> Judgement:
    """Run checkov's Kubernetes checks over `manifests` (file name -> objects), judged against
    checkov-suppressions.yaml."""
    with tempfile.TemporaryDirectory(prefix="tre-checkov-") as tmp:
        for name, objects in manifests.items():
            (Path(tmp) / f"{name}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
        command = [
            str(checkov),
            "--directory",
            tmp,
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--quiet",
            "--compact",
            # only the checks that ship with the pinned version: nothing is fetched
            "--skip-download",
        ]
        try:
            done = subprocess.run(
                command,
                check=False,  # 1 means failed checks; the report says which
                capture_output=True,
                text=True,
                timeout=TIMEOUT_SECONDS,
                env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise CheckovError(f"checkov did not run: {exc}") from exc
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise CheckovError(
            f"checkov exited {done.returncode} without a JSON report: {done.stderr[-2000:]}"
        ) from exc
    return judge(*_findings(report), load_suppressions(SUPPRESSIONS.read_text()))


def _findings(report: Any) -> tuple[int, list[Finding]]:
    # One framework gives one report object; checkov gives a list when several ran, and an
    # empty summary (no "results") when it found nothing to scan, which must not pass.
    reports = report if isinstance(report, list) else [report]
    kubernetes = [r for r in reports if r.get("check_type") == "kubernetes" and "results" in r]
    if not kubernetes:
        raise CheckovError(f"checkov scanned no Kubernetes resource: {str(report)[:500]}")
    results = kubernetes[0]["results"]
    failed = [
        Finding(c["check_id"], c["check_name"], c["resource"], c["file_path"])
        for c in results["failed_checks"]
    ]
    return int(kubernetes[0]["summary"]["passed"]), failed


if __name__ == "__main__":  # `make checkov`
    sys.stdout.write(f"{ensure_checkov()}\n")
