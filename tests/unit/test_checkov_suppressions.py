"""Judging checkov's findings against reviewed suppressions (pure):

- every committed suppression has a reason and names the resources it applies to;
- a finding is suppressed only for the check and the resources a suppression names;
- a suppression that matches nothing is stale, and a stale one fails the judgement.
"""

from __future__ import annotations

import pytest

from provisioner.compliance.checkov import (
    SUPPRESSIONS,
    CheckovError,
    Finding,
    Suppression,
    judge,
    load_suppressions,
)


def _finding(check: str, resource: str) -> Finding:
    return Finding(check, "a check", resource, "/chart.yaml")


def test_every_committed_suppression_has_a_reason_and_resources() -> None:
    suppressions = load_suppressions(SUPPRESSIONS.read_text())
    assert suppressions
    for s in suppressions:
        assert len(s.reason) > 40, s.check_id
        assert all("*" not in pattern for pattern in s.resources), s.check_id


@pytest.mark.parametrize(
    "text",
    ["CKV_K8S_8: {resources: [Deployment.a.b]}", "CKV_K8S_8: {reason: because}"],
)
def test_a_suppression_without_reason_or_resources_is_refused(text: str) -> None:
    with pytest.raises(CheckovError, match="CKV_K8S_8 needs a `reason` and `resources`"):
        load_suppressions(text)


def test_only_the_named_check_on_the_named_resources_is_suppressed() -> None:
    suppression = Suppression("CKV_K8S_8", ("Deployment.tre-system.*",), "no port")
    failed = [
        _finding("CKV_K8S_8", "Deployment.tre-system.tre-controller"),
        _finding("CKV_K8S_8", "Deployment.tre-hub.hub"),
        _finding("CKV_K8S_16", "Deployment.tre-system.tre-controller"),
    ]
    judgement = judge(10, failed, [suppression])
    assert judgement.suppressed == failed[:1]
    assert judgement.unsuppressed == failed[1:]
    assert not judgement.ok


def test_a_suppression_that_matches_nothing_is_stale() -> None:
    suppression = Suppression("CKV_K8S_8", ("Deployment.tre-system.tre-controller",), "x")
    judgement = judge(10, [], [suppression])
    assert judgement.stale == [suppression]
    assert not judgement.ok
    assert judge(
        10, [_finding("CKV_K8S_8", "Deployment.tre-system.tre-controller")], [suppression]
    ).ok
