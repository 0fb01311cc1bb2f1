"""What makes the published audit head controller-only (pure: `plan_audit_anchor`).

Behaviours under test (enforcement is proven against the real API server in
tests/integration/test_audit_trust.py):
- every object passes the Kubernetes 1.36 JSON schemas (strict) and `tre install` applies it;
- the controller identity from the settings (a ServiceAccount subject for a ServiceAccount
  username) may get/update/patch exactly ConfigMap tre-system/tre-audit-head; `create` is a
  separate rule without resourceNames, because RBAC cannot limit create by name;
- every signed-in user may read that one ConfigMap, nothing else;
- the admission policy fails closed, has a Deny binding of the same name, matches CREATE,
  UPDATE and DELETE of ConfigMaps in tre-system only, and lets only the controller through
  (plus the namespace controller's DELETE when tre-system itself is deleted).
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type hints

from provisioner.controller.install import plan_platform
from provisioner.models.settings import Settings
from provisioner.planning.audit_anchor import (
    AUDIT_HEAD_POLICY,
    NAMESPACE_CONTROLLER,
    READER_ROLE,
    WRITER_ROLE,
    plan_audit_anchor,
)
from provisioner.planning.names import AUDIT_HEAD_CONFIGMAP, SYSTEM_NAMESPACE

SETTINGS = Settings(controller_user="system:serviceaccount:tre-system:ctl")


def _by(kind: str, planned: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in planned if o["kind"] == kind}


def test_every_object_passes_the_schema_and_is_installed() -> None:
    planned = plan_audit_anchor(SETTINGS)
    for manifest in planned:
        kubernetes_validate.validate(manifest, "1.36", strict=True)
    assert all(o in plan_platform(SETTINGS) for o in planned)


def test_only_the_controller_may_write_the_head_configmap() -> None:
    planned = plan_audit_anchor(SETTINGS)
    writer = _by("Role", planned)[WRITER_ROLE]
    assert writer["metadata"]["namespace"] == SYSTEM_NAMESPACE
    assert writer["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get", "update", "patch"],
            "resourceNames": [AUDIT_HEAD_CONFIGMAP],
        },
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
    ]
    binding = _by("RoleBinding", planned)[WRITER_ROLE]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "namespace": "tre-system", "name": "ctl"}
    ]
    reader = _by("Role", planned)[READER_ROLE]
    assert reader["rules"][0]["verbs"] == ["get"]
    assert reader["rules"][0]["resourceNames"] == [AUDIT_HEAD_CONFIGMAP]
    assert _by("RoleBinding", planned)[READER_ROLE]["subjects"][0]["name"] == (
        "system:authenticated"
    )


def test_policy_fails_closed_and_names_the_controller() -> None:
    planned = plan_audit_anchor(SETTINGS)
    policy = _by("ValidatingAdmissionPolicy", planned)[AUDIT_HEAD_POLICY]
    binding = _by("ValidatingAdmissionPolicyBinding", planned)[AUDIT_HEAD_POLICY]
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert binding["spec"] == {"policyName": AUDIT_HEAD_POLICY, "validationActions": ["Deny"]}
    assert policy["metadata"]["labels"] == {"app.kubernetes.io/part-of": "ucloud-tre"}
    rule = spec["matchConstraints"]["resourceRules"][0]
    assert rule["operations"] == ["CREATE", "UPDATE", "DELETE"]
    assert rule["resources"] == ["configmaps"]
    assert spec["matchConstraints"]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": SYSTEM_NAMESPACE}
    }
    assert f'"{AUDIT_HEAD_CONFIGMAP}"' in spec["matchConditions"][0]["expression"]
    (validation,) = spec["validations"]
    assert '"system:serviceaccount:tre-system:ctl"' in validation["expression"]
    assert f'"{NAMESPACE_CONTROLLER}"' in validation["expression"]
    assert (
        f"delete the ValidatingAdmissionPolicyBinding {AUDIT_HEAD_POLICY}"
        in (validation["messageExpression"])
    )


def test_a_person_as_controller_gets_a_user_subject() -> None:
    planned = plan_audit_anchor(Settings(controller_user="ops-robot"))
    assert _by("RoleBinding", planned)[WRITER_ROLE]["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ops-robot"}
    ]
