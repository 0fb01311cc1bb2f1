"""Drift detection decides whether a resync writes anything.

Behaviours: a missing object needs apply; server-added fields (status, uid, defaults) are not
drift; a changed declared value is drift; an extra list entry is drift; a removed declared
label is drift.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from provisioner.planning.drift import needs_apply, needs_replace

DESIRED: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "allow-dns", "namespace": "tre-x", "labels": {"a": "1"}},
    "spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]},
}


def live(**changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(DESIRED)
    obj["metadata"]["uid"] = "1234"
    obj["metadata"]["resourceVersion"] = "7"
    obj["spec"]["policyTypes"] = ["Egress"]  # defaulted by the server
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = obj
        for part in parents:
            target = target[part]
        if value is None:
            del target[leaf]
        else:
            target[leaf] = value
    return obj


@pytest.mark.parametrize(
    ("live_object", "expected"),
    [
        (None, True),
        (live(), False),
        (live(spec__egress=[{"ports": [{"port": 53, "protocol": "TCP"}]}]), True),
        (live(spec__egress=[{"ports": [{"port": 53, "protocol": "UDP"}]}, {}]), True),
        (live(metadata__labels={}), True),
        (live(metadata__labels={"a": "1", "extra": "x"}), False),
    ],
    ids=[
        "missing",
        "server-fields-only",
        "changed-value",
        "extra-rule",
        "label-removed",
        "foreign-label",
    ],
)
def test_needs_apply(live_object: dict[str, Any] | None, expected: bool) -> None:
    assert needs_apply(DESIRED, live_object) is expected


def test_an_added_allow_rule_needs_a_replace() -> None:
    loosened = live(spec__egress=[{"ports": [{"port": 53, "protocol": "UDP"}]}])
    loosened["spec"]["ingress"] = [{}]  # someone allowed all ingress
    assert needs_apply(DESIRED, loosened) is False  # every declared field still matches...
    assert needs_replace(DESIRED, loosened) is True  # ...but the boundary moved


def test_server_fields_alone_need_no_replace() -> None:
    unchanged = live()
    unchanged["spec"] = dict(DESIRED["spec"])
    assert needs_replace(DESIRED, unchanged) is False
