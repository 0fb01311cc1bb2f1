"""What `tre install` applies (pure: `plan_platform`).

Behaviours under test:
- the controller's ServiceAccount is created when `controller_user` names one in tre-system
  (the identity the controller runs as in a cluster), after the namespace it lives in;
- no account is made up for any other identity (a person, or an account elsewhere, which
  its own namespace's owner manages);
- the hub's namespace (Pod Security baseline enforced, restricted warned and audited) and its
  ServiceAccount, the identity Ready workspaces bind, are installed, the namespace first;
- the airlock's namespace (Pod Security restricted) and its ServiceAccount, when
  `airlock_user` names one there, are installed, the namespace first; no second Namespace
  when the airlock shares a platform namespace, no account for an identity elsewhere;
- the proxy (in the hub's namespace) and the resolver (in its namespace, when the platform
  makes it) get ServiceAccounts of their own that mount no token, the identities admission
  ties their NetworkPolicy peer labels to.
"""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.controller.install import plan_platform
from provisioner.models.settings import Settings


def _service_accounts(settings: Settings) -> list[tuple[str, str]]:
    return [
        (o["metadata"]["namespace"], o["metadata"]["name"])
        for o in plan_platform(settings)
        if o["kind"] == "ServiceAccount"
    ]


def _namespace_before_its_account(settings: Settings, namespace: str) -> dict[str, Any]:
    """The Namespace `namespace` of the plan, asserted to come before its ServiceAccount."""
    objects = plan_platform(settings)
    kinds = [(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in objects]
    ns = kinds.index(("Namespace", namespace, None))
    account = next(i for i, k in enumerate(kinds) if k[0] == "ServiceAccount" and k[2] == namespace)
    assert ns < account
    return objects[ns]


def test_controller_service_account_is_installed_after_its_namespace() -> None:
    settings = Settings(controller_user="system:serviceaccount:tre-system:tre-ctl")
    objects = plan_platform(settings)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert _service_accounts(settings) == [
        ("tre-system", "tre-ctl"),
        ("tre-hub", "hub"),
        ("tre-hub", "tre-proxy"),
        ("tre-airlock", "tre-airlock"),
        ("tre-system", "tre-dns"),
    ]
    assert kinds.index(("Namespace", "tre-system")) < kinds.index(("ServiceAccount", "tre-ctl"))


@pytest.mark.parametrize(
    "user", ["ops-robot", "system:serviceaccount:elsewhere:tre-controller", "system:admin"]
)
def test_no_service_account_for_other_identities(user: str) -> None:
    assert _service_accounts(Settings(controller_user=user)) == [
        ("tre-hub", "hub"),
        ("tre-hub", "tre-proxy"),
        ("tre-airlock", "tre-airlock"),
        ("tre-system", "tre-dns"),
    ]


def test_the_hubs_namespace_and_service_account_are_installed() -> None:
    settings = Settings(hub_namespace="jhub", hub_service_account="spawner")
    namespace = _namespace_before_its_account(settings, "jhub")
    assert namespace["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "ucloud-tre",
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/enforce-version": "v1.36",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "v1.36",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/audit-version": "v1.36",
    }
    assert ("jhub", "spawner") in _service_accounts(settings)


def test_the_airlocks_namespace_and_service_account_are_installed() -> None:
    settings = Settings(
        airlock_namespace="out", airlock_user="system:serviceaccount:out:gatekeeper"
    )
    namespace = _namespace_before_its_account(settings, "out")
    assert namespace["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "ucloud-tre",
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "v1.36",
    }
    assert ("out", "gatekeeper") in _service_accounts(settings)


@pytest.mark.parametrize("user", ["airlock-robot", "system:serviceaccount:elsewhere:tre-airlock"])
def test_no_airlock_account_outside_its_namespace(user: str) -> None:
    assert _service_accounts(Settings(airlock_user=user)) == [
        ("tre-system", "tre-controller"),
        ("tre-hub", "hub"),
        ("tre-hub", "tre-proxy"),
        ("tre-system", "tre-dns"),
    ]


def test_an_airlock_sharing_a_platform_namespace_adds_no_second_namespace() -> None:
    objects = plan_platform(Settings(airlock_namespace="tre-system"))
    names = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
    assert sorted(names) == ["tre-hub", "tre-system"]


def test_the_proxy_and_the_resolver_have_tokenless_accounts_of_their_own() -> None:
    objects = plan_platform(Settings(dns_namespace="tre-airlock"))
    accounts = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in objects
        if o["kind"] == "ServiceAccount"
    }
    for key in (("tre-hub", "tre-proxy"), ("tre-airlock", "tre-dns")):
        assert accounts[key]["automountServiceAccountToken"] is False
    elsewhere = _service_accounts(Settings(dns_namespace="kube-dns-elsewhere"))
    assert [a for a in elsewhere if a[1] == "tre-dns"] == []
