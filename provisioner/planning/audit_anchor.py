"""Who may write the published audit head: the controller, and nobody else. Pure manifests.

The controller publishes the audit chain head (seq, hash) and its signing public key in the
ConfigMap `tre-system/tre-audit-head` (`provisioner.audit.anchor`), outside the audit bucket,
so that whoever can write the bucket still cannot cut entries off the end or replace the key
that `tre audit verify` checks signatures with. Two layers guard that ConfigMap:

- RBAC (Role + RoleBinding `tre-audit-head-writer` in tre-system): the controller identity may
  get, update and patch exactly that ConfigMap (resourceNames), and create ConfigMaps in
  tre-system. RBAC cannot restrict `create` by name (the name is not known when a create is
  authorized), so that grant is for any ConfigMap there; the admission policy below is what
  stops the controller's grant from being the only thing between others and the name, and what
  stops everyone else, admins included, from creating, changing or deleting it.
- ValidatingAdmissionPolicy `tre-audit-head-controller-only` (same shape as
  planning/admission.py: failurePolicy Fail, binding with validationActions [Deny]): CREATE,
  UPDATE and DELETE of that ConfigMap by anyone but `settings.controller_user` are refused,
  with a message naming the fix. One exception: the namespace controller may DELETE it, which
  only happens when tre-system itself is being deleted (otherwise that namespace could never
  finish terminating); deleting the namespace needs cluster-admin and is in the API server's
  audit log.

Reading the head is open to every signed-in user (Role + RoleBinding `tre-audit-head-reader`):
the head hash and the public key are not secrets, and anyone asked to check the log needs them.

An administrator who must re-anchor after an incident deletes the policy binding first, as for
Workspaces; the API server's audit log records that.
"""

from __future__ import annotations

from typing import Any, Final

from provisioner.models.settings import Settings
from provisioner.planning.admission import (
    ADMISSION_API_VERSION,
    PART_OF_LABEL,
    cel_str,
    policy_binding,
)
from provisioner.planning.names import (
    AUDIT_HEAD_CONFIGMAP,
    SYSTEM_NAMESPACE,
)
from provisioner.planning.rbac import system_role, system_role_binding, user_subject

AUDIT_HEAD_POLICY: Final = "tre-audit-head-controller-only"
WRITER_ROLE: Final = "tre-audit-head-writer"
READER_ROLE: Final = "tre-audit-head-reader"
# kube-controller-manager's namespace controller (with --use-service-account-credentials, as
# every current distribution runs it): it deletes the contents of a terminating namespace.
NAMESPACE_CONTROLLER: Final = "system:serviceaccount:kube-system:namespace-controller"


def plan_audit_anchor(settings: Settings) -> list[dict[str, Any]]:
    """Roles, bindings, the admission policy and its binding, in apply order."""
    controller = settings.controller_user
    policy = _policy(controller)
    return [
        system_role(
            WRITER_ROLE,
            [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "verbs": ["get", "update", "patch"],
                    "resourceNames": [AUDIT_HEAD_CONFIGMAP],
                },
                # RBAC cannot limit create to a name; the admission policy guards the name.
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            ],
        ),
        system_role_binding(WRITER_ROLE, user_subject(controller)),
        system_role(
            READER_ROLE,
            [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "verbs": ["get"],
                    "resourceNames": [AUDIT_HEAD_CONFIGMAP],
                }
            ],
        ),
        system_role_binding(
            READER_ROLE,
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Group",
                "name": "system:authenticated",
            },
        ),
        policy,
        policy_binding(policy),
    ]


def _policy(controller_user: str) -> dict[str, Any]:
    controller = cel_str(controller_user)
    where = f"{SYSTEM_NAMESPACE}/{AUDIT_HEAD_CONFIGMAP}"
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": AUDIT_HEAD_POLICY, "labels": dict(PART_OF_LABEL)},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": SYSTEM_NAMESPACE}
                },
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE", "DELETE"],
                        "resources": ["configmaps"],
                    }
                ],
            },
            "matchConditions": [
                {
                    "name": "audit-head-only",
                    # The name from the object itself: a create by POST has no name in the URL.
                    # A generated name (generateName) never equals a fixed one.
                    "expression": "(request.operation == 'DELETE' ? oldObject : object)"
                    f".metadata.name == {cel_str(AUDIT_HEAD_CONFIGMAP)}",
                }
            ],
            "validations": [
                {
                    "expression": f"request.userInfo.username == {controller} || "
                    "(request.operation == 'DELETE' && "
                    f"request.userInfo.username == {cel_str(NAMESPACE_CONTROLLER)})",
                    "reason": "Forbidden",
                    "messageExpression": f"request.userInfo.username + ' may not "
                    f"' + request.operation.lowerAscii() + ' ConfigMap {where}: only the "
                    f"controller ({controller_user}) publishes the audit chain head and its "
                    "public key there, so that nobody who can write the audit bucket can also "
                    "move the head; to re-anchor after an incident, delete the "
                    f"ValidatingAdmissionPolicyBinding {AUDIT_HEAD_POLICY} first'",
                }
            ],
        },
    }
