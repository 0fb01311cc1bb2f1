"""What reached people's browsers from a workspace: the browser gates' records, audited.

Each notebook pod's browser gate (images/gate) sends its records (files served, uploads,
refusals, budget crossings) and its count of the day to the airlock, which files each batch
as a BrowserActivity in the project namespace (`provisioner.airlock.gate_records`). Each
pass of the controller, for each project:

- every record becomes one audit entry, keyed by the pod's uid and the record's `seq`, so a
  batch sent twice, or seen in two passes, is written once;
- the Workspace's `status.browser` keeps each person's count of the day (UTC), the highest
  any of their gates reported (a gate counts from what the status said when it started, so
  the highest is the day's total) and the budgets they crossed; the hub starts the person's
  next gate from it;
- condition `BrowserWithinBudget` is False while someone's budget of the day is used up,
  naming them (the record of the crossing is in the audit log);
- a batch whose records are all in the log and whose count the status holds is deleted.

Pure functions: the controller reads the objects and writes what these return.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence, Set
from typing import Final

from provisioner.models.resources import BrowserActivity, BrowserUsage

CONDITION: Final = "BrowserWithinBudget"
CROSSED_EVENT: Final = "budget.crossed"
_METERS: Final = ("content", "other")


def record_key(activity: BrowserActivity, seq: int) -> str:
    """One gate record for good: its pod (uid) and its number in that pod."""
    return f"browser/{activity.spec.pod_uid}/{seq}"


def usage_today(
    recorded: Sequence[BrowserUsage], activities: Sequence[BrowserActivity], today: dt.date
) -> list[BrowserUsage]:
    """Each person's count of `today`: the highest of what the status holds and what every
    batch reports, with every meter crossed in either (older days are dropped)."""
    merged: dict[str, BrowserUsage] = {u.user: u for u in recorded if u.day == today}
    for activity in activities:
        reported = activity.spec.usage
        crossed = set(reported.crossed) | {
            record.fields.get("meter", "")
            for record in activity.spec.records
            if record.event == CROSSED_EVENT and record.at.astimezone(dt.UTC).date() == today
        }
        if reported.day != today and not crossed & set(_METERS):
            continue
        user = activity.spec.user
        held = merged.get(user) or BrowserUsage(user=user, day=today)
        same_day = reported.day == today
        merged[user] = BrowserUsage(
            user=user,
            day=today,
            content=max(held.content, reported.content if same_day else 0),
            other=max(held.other, reported.other if same_day else 0),
            crossed=sorted((set(held.crossed) | crossed) & set(_METERS)),
        )
    return [merged[user] for user in sorted(merged)]


def budget_condition(usage: Sequence[BrowserUsage]) -> tuple[bool, str, str]:
    """(ok, reason, message) of condition `CONDITION` for the day's counts."""
    crossed = [u for u in usage if u.crossed]
    if not crossed:
        return True, "WithinBudget", "no one has used up today's browser budget"
    who = ", ".join(f"{u.user} ({'/'.join(u.crossed)})" for u in crossed)
    return (
        False,
        "BudgetUsedUp",
        f"today's budget for what reaches the browser is used up by {who}; it starts again "
        "tomorrow (UTC); the crossings are in the audit log (browser.budget.crossed)",
    )


def finished(
    activities: Sequence[BrowserActivity],
    audited: Set[str] | None,
    recorded: Sequence[BrowserUsage],
    today: dt.date,
) -> list[BrowserActivity]:
    """The batches to delete: every record is in the log, and the status as written before
    this pass (`recorded`) holds the batch's count (a count of an earlier day is not kept)."""
    if audited is None:
        return []
    held = {u.user: u for u in recorded if u.day == today}
    done: list[BrowserActivity] = []
    for activity in activities:
        reported = activity.spec.usage
        status = held.get(activity.spec.user)
        counted = reported.day != today or (
            status is not None
            and status.content >= reported.content
            and status.other >= reported.other
        )
        keys = {record_key(activity, record.seq) for record in activity.spec.records}
        if counted and keys <= audited:
            done.append(activity)
    return done
