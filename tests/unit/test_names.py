"""The naming module keeps its written guarantees.

Behaviours under test:
- every name is a valid DNS-1123 label (at most 63 characters), for the shortest and longest
  slugs and dataset names the domain types allow;
- a PV name is readable (`tre-<project>--<dataset>`) when it fits and splits one way only;
- otherwise it is cut and ends in `---` plus 16 hex digits of sha256, still at most 63
  characters;
- different (project, dataset) pairs never share a PV name, including pairs whose readable
  names would be equal (`a--b` + `cde` against `a` + `b--cde`);
- namespaces are `tre-<project>` and so distinct per project;
- inputs outside the domain patterns are refused with the validator's message;
- owned labels hold the managed-by and project labels, and the selector string matches them.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable

import pytest

from provisioner import API_GROUP
from provisioner.planning import names

LONGEST_PROJECT = "p" + "x" * 30 + "z"  # 32 characters, the maximum slug
LONGEST_DATASET = "d" + "y" * 38 + "z"  # 40 characters, the maximum dataset name
HASHED_NAME = re.compile(r"^[a-z0-9-]{44}---[0-9a-f]{16}$")


def _pv_hash(project: str, dataset: str) -> str:
    return hashlib.sha256(f"tre-/{project}/{dataset}".encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("project", "dataset", "expected"),
    [
        pytest.param("abc", "xyz", "tre-abc--xyz", id="shortest-names"),
        pytest.param("diabetes-2026", "census", "tre-diabetes-2026--census", id="typical"),
        pytest.param(
            "p" * 28 + "-end",
            "d" * 25,
            "tre-" + "p" * 28 + "-end--" + "d" * 25,
            id="exactly-63-stays-readable",
        ),
        pytest.param(
            "p" * 28 + "-end",
            "d" * 26,
            ("tre-" + "p" * 28 + "-end--" + "d" * 26)[:44]
            + "---"
            + _pv_hash("p" * 28 + "-end", "d" * 26),
            id="64-is-cut-and-hashed",
        ),
        pytest.param(
            LONGEST_PROJECT,
            LONGEST_DATASET,
            ("tre-" + LONGEST_PROJECT + "--" + LONGEST_DATASET)[:44]
            + "---"
            + _pv_hash(LONGEST_PROJECT, LONGEST_DATASET),
            id="longest-names",
        ),
        pytest.param(
            "a--b", "cde", "tre-a--b--cde"[:44] + "---" + _pv_hash("a--b", "cde"), id="dash-dash"
        ),
        pytest.param(
            "abc", "x---y", "tre-abc--x---y" + "---" + _pv_hash("abc", "x---y"), id="triple-dash"
        ),
    ],
)
def test_dataset_pv_name(project: str, dataset: str, expected: str) -> None:
    name = names.dataset_pv_name(project, dataset)

    assert name == expected
    assert names.is_dns1123_label(name)


def test_hashed_names_have_a_fixed_shape() -> None:
    name = names.dataset_pv_name(LONGEST_PROJECT, LONGEST_DATASET)

    assert len(name) == 63
    assert HASHED_NAME.fullmatch(name)


def test_ambiguous_readable_names_do_not_collide() -> None:
    # Both would read `tre-a--b--cde` without the hash rule.
    assert names.dataset_pv_name("a--b", "cde") != names.dataset_pv_name("abc", "b--cde")
    assert names.dataset_pv_name("abc--d", "eee") != names.dataset_pv_name("abc", "d--eee")


def test_truncated_names_with_the_same_beginning_do_not_collide() -> None:
    first = names.dataset_pv_name(LONGEST_PROJECT, LONGEST_DATASET)
    second = names.dataset_pv_name(LONGEST_PROJECT, LONGEST_DATASET[:-1] + "q")

    assert first[:44] == second[:44]
    assert first != second


def _small_names() -> list[str]:
    """Every valid slug of 3-6 characters over {a, -}: all the ways '-' and '--' can fall."""
    middles = (
        "".join(chars) for size in range(1, 5) for chars in itertools.product("a-", repeat=size)
    )
    return [f"a{middle}a" for middle in middles]


def test_pv_names_are_unique_and_valid_over_every_small_pair() -> None:
    pairs = list(itertools.product(_small_names(), repeat=2))
    pairs += [(LONGEST_PROJECT[: n + 3], LONGEST_DATASET) for n in range(30)]

    pv_names = [names.dataset_pv_name(project, dataset) for project, dataset in pairs]

    assert len(set(pv_names)) == len(pairs)
    assert all(names.is_dns1123_label(name) for name in pv_names)


@pytest.mark.parametrize(
    ("project", "expected"),
    [
        pytest.param("abc", "tre-abc", id="shortest"),
        pytest.param(LONGEST_PROJECT, "tre-" + LONGEST_PROJECT, id="longest"),
        pytest.param("a--b", "tre-a--b", id="dash-dash"),
    ],
)
def test_namespace_name(project: str, expected: str) -> None:
    assert names.namespace_name(project) == expected
    assert names.is_dns1123_label(expected)


@pytest.mark.parametrize("dataset", ["abc", "census-2024", LONGEST_DATASET])
def test_namespaced_dataset_names(dataset: str) -> None:
    assert names.dataset_pvc_name(dataset) == f"ds-{dataset}"
    assert names.dataset_volume_name(dataset) == f"ds-{dataset}"
    assert names.is_dns1123_label(names.dataset_pvc_name(dataset))


def test_fixed_names_are_valid_and_distinct() -> None:
    fixed = [
        names.RESOURCE_QUOTA_NAME,
        names.LIMIT_RANGE_NAME,
        names.DEFAULT_SERVICE_ACCOUNT_NAME,
        names.HUB_ROLE_BINDING_NAME,
        names.POLICY_DEFAULT_DENY,
        names.POLICY_ALLOW_DNS,
        names.POLICY_ALLOW_HUB_API,
        names.POLICY_ALLOW_AIRLOCK,
        names.POLICY_ALLOW_FROM_HUB_PROXY,
        names.PROJECT_VOLUME_NAME,
        names.project_pvc_name(),
    ]

    assert all(names.is_dns1123_label(name) for name in fixed)
    # A dataset PVC or volume (`ds-...`) can never take the project storage's name.
    assert not any(name.startswith("ds-") for name in fixed)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda: names.namespace_name("ab"), "project slug 'ab'", id="slug-too-short"),
        pytest.param(
            lambda: names.namespace_name(LONGEST_PROJECT + "a"),
            "project slug",
            id="slug-too-long",
        ),
        pytest.param(
            lambda: names.namespace_name("Upper"), "project slug 'Upper'", id="slug-upper"
        ),
        pytest.param(lambda: names.namespace_name("abc-"), "project slug", id="slug-trailing"),
        pytest.param(
            lambda: names.dataset_pv_name("abc", "x.y"), "dataset name 'x.y'", id="dataset-dot"
        ),
        pytest.param(
            lambda: names.dataset_pvc_name(LONGEST_DATASET + "a"),
            "dataset name",
            id="dataset-too-long",
        ),
        pytest.param(lambda: names.owned_labels("1abc"), "project slug '1abc'", id="labels"),
    ],
)
def test_invalid_inputs_are_refused(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_owned_labels_and_selector() -> None:
    assert names.owned_labels("diabetes-2026") == {
        "app.kubernetes.io/managed-by": "ucloud-tre",
        f"{API_GROUP}/project": "diabetes-2026",
    }
    assert names.owned_selector("diabetes-2026") == (
        f"app.kubernetes.io/managed-by=ucloud-tre,{API_GROUP}/project=diabetes-2026"
    )


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("-a", False),
        ("a-", False),
        ("a.b", False),
        ("A", False),
        ("", False),
    ],
)
def test_is_dns1123_label(value: str, valid: bool) -> None:
    assert names.is_dns1123_label(value) is valid


@pytest.mark.parametrize(
    ("username", "account"),
    [
        ("system:serviceaccount:tre-system:tre-controller", ("tre-system", "tre-controller")),
        ("system:serviceaccount:tre-system", None),
        ("system:serviceaccount:a:b:c", None),
        ("system:admin", None),
        ("lea", None),
    ],
)
def test_service_account_of(username: str, account: tuple[str, str] | None) -> None:
    assert names.service_account_of(username) == account
