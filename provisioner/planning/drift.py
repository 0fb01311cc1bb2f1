"""Pure drift detection: does a live object still say everything the plan says?

An unchanged resync must send zero writes, so we compare before applying. The rule is the
server-side-apply view of ownership: every field we declare must have the same value live;
fields we do not declare (status, defaults the server filled in, a `uid` the PV binder added)
do not count. Lists are compared element by element with the same length, so an extra rule
slipped into one of our NetworkPolicies is drift, not "a superset".
"""

from __future__ import annotations

from typing import Any


def declared_fields_match(desired: Any, live: Any) -> bool:
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live and declared_fields_match(value, live[key])
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(declared_fields_match(d, v) for d, v in zip(desired, live, strict=True))
        )
    return bool(desired == live)


def needs_apply(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """True when `live` is missing or differs from `desired` in a field we declare."""
    if live is None:
        return True
    return not declared_fields_match(desired, live)


# Kinds that are a security boundary: for these a field someone *added* is drift too (an extra
# allow rule in a NetworkPolicy, an extra subject in a RoleBinding), and server-side apply alone
# cannot remove it, because the added field belongs to another field manager. The controller
# replaces such an object whole. None of these kinds gets server-side defaults, so an exact
# comparison of these fields is stable (an unchanged resync still writes nothing).
EXACT_FIELDS: dict[str, tuple[str, ...]] = {
    "NetworkPolicy": ("spec",),
    "RoleBinding": ("roleRef", "subjects"),
    # the people's read grants (planning/read_grants.py): a name added is a read granted
    "ClusterRole": ("rules", "aggregationRule"),
    "ClusterRoleBinding": ("roleRef", "subjects"),
}


def needs_replace(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """True when `live` has content beyond the plan in a field that must match exactly."""
    fields = EXACT_FIELDS.get(str(desired.get("kind")))
    if live is None or not fields:
        return False
    return any(desired.get(name) != live.get(name) for name in fields)
