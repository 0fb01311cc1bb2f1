"""The local control plane is a real Kubernetes API server with the features we rely on.

Behaviours under test (each against the real kube-apiserver started by `dev_platform`):
- Pod Security Admission: a namespace labelled enforce=restricted refuses a privileged pod
  (refused by PodSecurity itself, not by --allow-privileged) and admits a compliant one.
- RBAC + impersonation: an impersonated unprivileged user is denied reading secrets in another
  namespace, both by a real request and by a SubjectAccessReview; the admin is allowed.
- The controller-manager runs: deleting a namespace completes (namespace controller), and
  every namespace gets its `default` ServiceAccount.
- ValidatingAdmissionPolicy: a CEL rule on request.userInfo.username is enforced.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.integration


def _pod(name: str, *, privileged: bool) -> dict[str, object]:
    container: dict[str, object] = {"name": "main", "image": "registry.invalid/busybox:1"}
    if privileged:
        container["securityContext"] = {"privileged": True}
    else:
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container]},
    }


@pytest.fixture
def restricted_namespace(admin_api: client.ApiClient, namespace: str) -> str:
    client.CoreV1Api(admin_api).patch_namespace(
        namespace,
        {
            "metadata": {
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "v1.36",
                }
            }
        },
    )
    return namespace


def test_restricted_namespace_refuses_privileged_pod(
    admin_api: client.ApiClient, restricted_namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(
            restricted_namespace, _pod("bad", privileged=True), dry_run="All"
        )
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "restricted:v1.36"' in message
    assert 'privileged (container "main" must not set securityContext.privileged=true)' in message


def test_restricted_namespace_admits_compliant_pod(
    admin_api: client.ApiClient, restricted_namespace: str
) -> None:
    created = client.CoreV1Api(admin_api).create_namespaced_pod(
        restricted_namespace, _pod("good", privileged=False), dry_run="All"
    )
    assert created.metadata.name == "good"


def test_impersonated_user_cannot_read_secrets_elsewhere(
    admin_api: client.ApiClient, as_user: Callable[..., client.ApiClient], namespace: str
) -> None:
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(as_user("mallory")).list_namespaced_secret(namespace)
    assert denied.value.status == 403
    assert (
        'User "mallory" cannot list resource "secrets"' in json.loads(denied.value.body)["message"]
    )
    # The admin is allowed the same read.
    client.CoreV1Api(admin_api).list_namespaced_secret(namespace)


@pytest.mark.parametrize(
    ("user", "groups", "allowed"),
    [
        ("mallory", [], False),
        ("tre-admin", ["system:masters"], True),
    ],
)
def test_subject_access_review_for_secrets(
    admin_api: client.ApiClient, namespace: str, user: str, groups: list[str], allowed: bool
) -> None:
    review = client.AuthorizationV1Api(admin_api).create_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": groups,
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": "get",
                    "resource": "secrets",
                },
            },
        }
    )
    assert review.status.allowed is allowed


def test_namespace_deletion_completes(admin_api: client.ApiClient) -> None:
    core = client.CoreV1Api(admin_api)
    name = f"t-del-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "content"}})
    # The ServiceAccount controller gives every namespace its `default` account.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        ):
            break
        time.sleep(0.2)
    else:
        pytest.fail("no `default` ServiceAccount after 30s: is the controller-manager running?")
    core.delete_namespace(name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            assert exc.status == 404
            return
        time.sleep(0.25)
    pytest.fail(f"namespace {name} still exists 60s after deletion")


def test_validating_admission_policy_on_username_is_enforced(
    admin_api: client.ApiClient, as_user: Callable[..., client.ApiClient], namespace: str
) -> None:
    """A ConfigMap labelled `owner` may only be created by that owner."""
    reg = client.AdmissionregistrationV1Api(admin_api)
    rbac = client.RbacAuthorizationV1Api(admin_api)
    suffix = uuid.uuid4().hex[:8]
    policy = f"owner-is-caller-{suffix}"
    reg.create_validating_admission_policy(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!has(object.metadata.labels) || "
                        "!('owner' in object.metadata.labels) || "
                        "object.metadata.labels['owner'] == request.userInfo.username",
                        "message": "label owner must equal the caller",
                    }
                ],
            },
        }
    )
    reg.create_validating_admission_policy_binding(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        }
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "alice-edit"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}
            ],
        },
    )
    alice = client.CoreV1Api(as_user("alice"))

    def create(name: str, owner: str) -> None:
        alice.create_namespaced_config_map(
            namespace, {"metadata": {"name": name, "labels": {"owner": owner}}}
        )

    try:
        # Policies take effect asynchronously: wait until the forged one is refused.
        deadline = time.monotonic() + 30
        while True:
            try:
                create(f"forged-{uuid.uuid4().hex[:6]}", "bob")
            except ApiException as exc:
                assert exc.status in (403, 422)
                assert "label owner must equal the caller" in json.loads(exc.body)["message"]
                break
            if time.monotonic() > deadline:
                pytest.fail("the ValidatingAdmissionPolicy was never enforced")
            time.sleep(0.25)
        create("honest", "alice")  # the same caller with her own name is admitted
    finally:
        reg.delete_validating_admission_policy_binding(policy)
        reg.delete_validating_admission_policy(policy)
