"""What `tre install` applies (pure: `plan_platform`).

Behaviours under test:
- the controller's ServiceAccount is created when `controller_user` names one in tre-system
  (the identity the controller runs as in a cluster), after the namespace it lives in;
- no account is made up for any other identity (a person, or an account elsewhere, which
  its own namespace's owner manages);
- the hub's namespace (Pod Security baseline enforced, restricted warned and audited) and its
  ServiceAccount, the identity Ready workspaces bind, are installed, the namespace first.
"""

from __future__ import annotations

import pytest

from provisioner.controller.install import plan_platform
from provisioner.models.settings import Settings


def _service_accounts(settings: Settings) -> list[tuple[str, str]]:
    return [
        (o["metadata"]["namespace"], o["metadata"]["name"])
        for o in plan_platform(settings)
        if o["kind"] == "ServiceAccount"
    ]


def test_controller_service_account_is_installed_after_its_namespace() -> None:
    settings = Settings(controller_user="system:serviceaccount:tre-system:tre-ctl")
    objects = plan_platform(settings)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert _service_accounts(settings) == [("tre-system", "tre-ctl"), ("tre-hub", "hub")]
    assert kinds.index(("Namespace", "tre-system")) < kinds.index(("ServiceAccount", "tre-ctl"))


@pytest.mark.parametrize(
    "user", ["ops-robot", "system:serviceaccount:elsewhere:tre-controller", "system:admin"]
)
def test_no_service_account_for_other_identities(user: str) -> None:
    assert _service_accounts(Settings(controller_user=user)) == [("tre-hub", "hub")]


def test_the_hubs_namespace_and_service_account_are_installed() -> None:
    settings = Settings(hub_namespace="jhub", hub_service_account="spawner")
    objects = plan_platform(settings)
    namespace = next(
        o for o in objects if o["kind"] == "Namespace" and o["metadata"]["name"] == "jhub"
    )
    assert namespace["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "ucloud-tre",
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/enforce-version": "v1.36",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "v1.36",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/audit-version": "v1.36",
    }
    assert objects.index(namespace) < next(
        i
        for i, o in enumerate(objects)
        if o["kind"] == "ServiceAccount" and o["metadata"]["namespace"] == "jhub"
    )
    assert ("jhub", "spawner") in _service_accounts(settings)
