"""Pure rule for a workspace's phase: Ready while any request is active, then Frozen, then,
after the retention period, TornDown. A project that never had a workspace gets none."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from provisioner.models.resources import WorkspacePhase


@dataclass(frozen=True)
class PhaseDecision:
    phase: WorkspacePhase
    frozen_at: dt.datetime | None  # when it was first frozen; kept through TornDown


def next_phase(
    *,
    active: bool,
    live_phase: WorkspacePhase | None,
    frozen_at: dt.datetime | None,
    now: dt.datetime,
    retention: dt.timedelta,
) -> PhaseDecision | None:
    """None: nothing to do (never provisioned, or already torn down and nothing active)."""
    if active:
        return PhaseDecision(WorkspacePhase.READY, None)
    if live_phase is None or live_phase is WorkspacePhase.TORN_DOWN:
        return None
    since = frozen_at if live_phase is WorkspacePhase.FROZEN and frozen_at else now
    if now - since >= retention:
        return PhaseDecision(WorkspacePhase.TORN_DOWN, since)
    return PhaseDecision(WorkspacePhase.FROZEN, since)
