"""The airlock's reach as `tre install` grants it (pure: `plan_platform_rbac`).

Behaviours under test (the real API server's answers are in
tests/integration/test_airlock_trust.py):
- the whole ClusterRole, so every verb it holds is asserted every time: read exports,
  workspaces, datasets and access requests; write only the exports' status subresource;
  review tokens (a browser gate's) and file browser activity (never read or change it);
  impersonate people (mode user-info, so never a ServiceAccount or a node), only the
  configured output checker group, two user extras (its own mark, `tre.ucloud.org/via:
  airlock`, and a notebook's project, `tre.ucloud.org/workspace`), and as them only create,
  update and patch exports;
- people (members through their workspace's binding, output checkers) hold no read on
  exports, only the writes the airlock makes as them (S16: reviews under review hidden);
- it is bound to the airlock's identity only: a ServiceAccount subject for a ServiceAccount
  username, a User otherwise.
"""

from __future__ import annotations

from typing import Any

from provisioner.models.settings import Settings
from provisioner.planning.rbac import plan_platform_rbac


def _named(settings: Settings, kind: str, name: str) -> dict[str, Any]:
    return next(
        o
        for o in plan_platform_rbac(settings)
        if o["kind"] == kind and o["metadata"]["name"] == name
    )


def test_the_airlocks_role_is_exactly_its_reach() -> None:
    role = _named(Settings(output_checker_group="sdc:checkers"), "ClusterRole", "tre-airlock")
    assert role == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": "tre-airlock",
            "labels": {"app.kubernetes.io/managed-by": "ucloud-tre"},
        },
        "rules": [
            {
                "apiGroups": ["tre.ucloud.org"],
                "resources": ["exportrequests", "workspaces", "datasets", "accessrequests"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": ["tre.ucloud.org"],
                "resources": ["exportrequests/status"],
                "verbs": ["get", "patch", "update"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["tokenreviews"],
                "verbs": ["create"],
            },
            {
                "apiGroups": ["tre.ucloud.org"],
                "resources": ["browseractivities"],
                "verbs": ["create"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["users"],
                "verbs": ["impersonate:user-info"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["groups"],
                "verbs": ["impersonate:user-info"],
                "resourceNames": ["sdc:checkers"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["userextras/tre.ucloud.org/via"],
                "verbs": ["impersonate:user-info"],
                "resourceNames": ["airlock"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["userextras/tre.ucloud.org/workspace"],
                "verbs": ["impersonate:user-info"],
            },
            {
                "apiGroups": ["tre.ucloud.org"],
                "resources": ["exportrequests"],
                "verbs": [
                    "impersonate-on:user-info:create",
                    "impersonate-on:user-info:update",
                    "impersonate-on:user-info:patch",
                ],
            },
        ],
    }


def test_people_hold_no_read_on_exports_only_the_writes_the_airlock_makes_as_them() -> None:
    settings = Settings()
    author = _named(settings, "ClusterRole", "tre-export-author")
    checker = _named(settings, "ClusterRole", "tre-output-checker")
    assert author["rules"] == [
        {
            "apiGroups": ["tre.ucloud.org"],
            "resources": ["exportrequests"],
            "verbs": ["create", "update"],
        }
    ]
    assert checker["rules"] == [
        {"apiGroups": ["tre.ucloud.org"], "resources": ["exportrequests"], "verbs": ["update"]}
    ]


def test_the_role_is_bound_to_the_airlocks_identity_only() -> None:
    binding = _named(Settings(), "ClusterRoleBinding", "tre-airlock")
    assert binding["roleRef"]["name"] == "tre-airlock"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "namespace": "tre-airlock", "name": "tre-airlock"}
    ]
    person = _named(Settings(airlock_user="airlock-robot"), "ClusterRoleBinding", "tre-airlock")
    assert person["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "airlock-robot"}
    ]
