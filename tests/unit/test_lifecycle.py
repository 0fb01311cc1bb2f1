"""The workspace phase rule: Ready while active; Frozen when nothing is active, keeping the
first freeze time; TornDown once the retention period has passed; nothing for a project that
never had a workspace or is already torn down; a new approval revives a frozen workspace."""

from __future__ import annotations

import datetime as dt

import pytest

from provisioner.models.resources import WorkspacePhase as P
from provisioner.planning.lifecycle import PhaseDecision, next_phase

NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("active", "live", "frozen_at", "expected"),
    [
        (True, None, None, PhaseDecision(P.READY, None)),
        (True, P.FROZEN, NOW - DAY, PhaseDecision(P.READY, None)),
        (False, None, None, None),
        (False, P.TORN_DOWN, NOW - 99 * DAY, None),
        (False, P.READY, None, PhaseDecision(P.FROZEN, NOW)),
        (False, P.FROZEN, NOW - DAY, PhaseDecision(P.FROZEN, NOW - DAY)),
        (False, P.FROZEN, NOW - 30 * DAY, PhaseDecision(P.TORN_DOWN, NOW - 30 * DAY)),
    ],
    ids=["approved", "re-approved", "never", "gone", "freeze", "still-frozen", "retention-over"],
)
def test_next_phase(
    active: bool, live: P | None, frozen_at: dt.datetime | None, expected: PhaseDecision | None
) -> None:
    got = next_phase(
        active=active, live_phase=live, frozen_at=frozen_at, now=NOW, retention=30 * DAY
    )
    assert got == expected


def test_zero_retention_tears_down_at_once() -> None:
    got = next_phase(active=False, live_phase=P.READY, frozen_at=None, now=NOW, retention=0 * DAY)
    assert got == PhaseDecision(P.TORN_DOWN, NOW)
