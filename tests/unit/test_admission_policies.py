"""The planned admission policies are well-formed and follow the settings.

Behaviours under test (what they enforce is proven against the real API server in
tests/integration/test_admission.py):
- every policy and binding passes the Kubernetes 1.36 JSON schemas (strict);
- each policy fails closed (failurePolicy Fail) and has a Deny binding of the same name,
  policies before their bindings;
- the approver group, the maximum duration, the two-approver tiers, the controller and the
  airlock identities come from the settings; `controller_user` overrides the settings'
  identity;
- the four-eyes policy takes Datasets as parameters and its binding selects every Dataset,
  allowing the request when there is none; so does the dataset overlap policy, which runs on
  create and on a classification change only;
- the dataset steward policy judges updates (not creates, not the status subresource);
- the platform peer policy covers the hub, airlock and resolver namespaces and ties each peer
  label of the project NetworkPolicies to the account the settings name for that role;
- no policy exempts kube-system ServiceAccounts by prefix: the cluster's own controllers are
  named one by one, and none of them is exempt from the project-namespace policy.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type hints
import pytest

from provisioner import API_GROUP, API_VERSION
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier
from provisioner.planning import admission
from provisioner.planning.admission import (
    DATASET_OVERLAP_POLICY,
    DATASET_STEWARD_POLICY,
    EXPORT_STATUS_POLICY,
    FOUR_EYES_POLICY,
    OPEN_REQUESTS_POLICY,
    PLATFORM_PEERS_POLICY,
    POD_DENY_ALL_POLICY,
    PROJECT_NAMESPACE_POLICY,
    PROJECT_OBJECTS_POLICY,
    WORKSPACE_POLICY,
    high_tiers,
    plan_admission_policies,
)

Manifest = dict[str, Any]


def by_name(planned: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in planned if m["kind"] == kind}


def cel(policy: Manifest) -> str:
    """All CEL text of a policy, to look for values the settings put there."""
    spec = policy["spec"]
    parts = [v["expression"] for v in spec.get("variables", [])]
    for validation in spec["validations"]:
        parts += [validation["expression"], validation.get("messageExpression", "")]
        parts.append(validation.get("message", ""))
    return "\n".join(parts)


@pytest.fixture
def planned() -> list[Manifest]:
    return plan_admission_policies(
        Settings(
            approver_group="dac:members",
            two_approver_tier=ClassificationTier.SENSITIVE,
            max_request_days=90,
            controller_user="system:serviceaccount:tre:ctl",
            airlock_user="system:serviceaccount:out:gate",
        )
    )


def test_every_object_passes_the_kubernetes_schema(planned: list[Manifest]) -> None:
    for manifest in planned:
        kubernetes_validate.validate(manifest, "1.36", strict=True)


def test_each_policy_fails_closed_and_has_a_deny_binding(planned: list[Manifest]) -> None:
    policies = by_name(planned, "ValidatingAdmissionPolicy")
    bindings = by_name(planned, "ValidatingAdmissionPolicyBinding")
    assert list(policies) == list(bindings)
    # every policy the module names is planned (none dropped by a refactor), and no other
    declared = {
        value
        for name, value in vars(admission).items()
        if name.endswith("_POLICY") and isinstance(value, str) and value.startswith("tre-")
    }
    assert set(policies) == declared
    for name, policy in policies.items():
        assert policy["spec"]["failurePolicy"] == "Fail"
        assert bindings[name]["spec"]["policyName"] == name
        assert bindings[name]["spec"]["validationActions"] == ["Deny"]
        assert planned.index(policy) < planned.index(bindings[name])
        # the filing limit judges AccessRequests but takes a ConfigMap as parameter, so it is
        # named apart from the policies whose bindings tests may delete (guards_custom_resources)
        ours = name == OPEN_REQUESTS_POLICY or name.startswith(
            (
                "tre-accessrequest",
                "tre-dataset",
                "tre-workspace",
                "tre-exportrequest",
                "tre-browseractivity",
                "tre-resource",
            )
        )
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]:
            if ours:
                assert rule["apiGroups"] == [API_GROUP]
                assert rule["apiVersions"] == [API_VERSION]
            else:
                assert API_GROUP not in rule["apiGroups"]


def test_pods_need_the_deny_all_policy_of_their_own_namespace(planned: list[Manifest]) -> None:
    binding = by_name(planned, "ValidatingAdmissionPolicyBinding")[POD_DENY_ALL_POLICY]
    # no namespace in paramRef: looked up in the pod's namespace; missing means Deny
    assert binding["spec"]["paramRef"] == {
        "name": "default-deny-all",
        "parameterNotFoundAction": "Deny",
    }
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {
        "matchExpressions": [{"key": "tre.ucloud.org/project", "operator": "Exists"}]
    }


def test_settings_reach_the_rules(planned: list[Manifest]) -> None:
    policies = by_name(planned, "ValidatingAdmissionPolicy")
    decisions = cel(policies["tre-accessrequest-decisions"])
    assert '"dac:members" in request.userInfo.groups' in decisions
    assert "variables.extendedDays <= 90" in decisions
    assert "variables.days <= 90" in cel(policies["tre-accessrequest-create"])
    assert 'params.spec.classification in ["sensitive"]' in cel(policies[FOUR_EYES_POLICY])
    assert 'request.userInfo.username == "system:serviceaccount:tre:ctl"' in cel(
        policies[WORKSPACE_POLICY]
    )
    export_status = cel(policies[EXPORT_STATUS_POLICY])
    assert 'request.userInfo.username == "system:serviceaccount:tre:ctl"' in export_status
    assert 'request.userInfo.username == "system:serviceaccount:out:gate"' in export_status


def test_controller_user_argument_overrides_the_settings() -> None:
    planned = plan_admission_policies(Settings(), controller_user="ctl-test")
    policy = by_name(planned, "ValidatingAdmissionPolicy")[WORKSPACE_POLICY]
    assert 'request.userInfo.username == "ctl-test"' in cel(policy)


@pytest.mark.parametrize(
    ("threshold", "tiers"),
    [
        (ClassificationTier.PUBLIC, ["public", "internal", "confidential", "sensitive"]),
        (ClassificationTier.CONFIDENTIAL, ["confidential", "sensitive"]),
        (ClassificationTier.SENSITIVE, ["sensitive"]),
    ],
)
def test_high_tiers_are_the_threshold_and_above(
    threshold: ClassificationTier, tiers: list[str]
) -> None:
    assert [t.value for t in high_tiers(Settings(two_approver_tier=threshold))] == tiers


def test_four_eyes_policy_reads_every_dataset(planned: list[Manifest]) -> None:
    policy = by_name(planned, "ValidatingAdmissionPolicy")[FOUR_EYES_POLICY]
    binding = by_name(planned, "ValidatingAdmissionPolicyBinding")[FOUR_EYES_POLICY]
    assert policy["spec"]["paramKind"] == {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "Dataset",
    }
    assert binding["spec"]["paramRef"] == {"selector": {}, "parameterNotFoundAction": "Allow"}
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == [
        "accessrequests/status"
    ]


def test_dataset_overlap_policy_reads_every_dataset(planned: list[Manifest]) -> None:
    policy = by_name(planned, "ValidatingAdmissionPolicy")[DATASET_OVERLAP_POLICY]
    binding = by_name(planned, "ValidatingAdmissionPolicyBinding")[DATASET_OVERLAP_POLICY]
    assert policy["spec"]["paramKind"]["kind"] == "Dataset"
    assert binding["spec"]["paramRef"] == {"selector": {}, "parameterNotFoundAction": "Allow"}
    [rule] = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["resources"], rule["operations"]) == (["datasets"], ["CREATE", "UPDATE"])
    [condition] = policy["spec"]["matchConditions"]
    expression = condition["expression"]
    assert "object.spec.classification != oldObject.spec.classification" in expression
    assert "params.metadata.name != object.metadata.name" in cel(policy)


def test_dataset_steward_policy_judges_updates_of_the_dataset_only(
    planned: list[Manifest],
) -> None:
    policy = by_name(planned, "ValidatingAdmissionPolicy")[DATASET_STEWARD_POLICY]
    [rule] = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["resources"], rule["operations"]) == (["datasets"], ["UPDATE"])
    assert "oldObject.spec.steward == request.userInfo.username" in cel(policy)


def test_only_named_cluster_controllers_are_exempt(planned: list[Manifest]) -> None:
    policies = [o for o in planned if o["kind"] == "ValidatingAdmissionPolicy"]
    text = repr(policies)
    assert "startsWith('system:serviceaccount:kube-system:')" not in text
    (objects,) = [p for p in policies if p["metadata"]["name"] == PROJECT_OBJECTS_POLICY]
    rule = objects["spec"]["validations"][0]["expression"]
    for write in (
        '"system:serviceaccount:kube-system:generic-garbage-collector" && '
        'request.operation in ["DELETE"])',
        '"system:serviceaccount:kube-system:root-ca-cert-publisher" && request.operation in '
        '["CREATE", "UPDATE"] && request.resource.resource == "configmaps" && '
        'object.metadata.name == "kube-root-ca.crt")',
    ):
        assert write in rule
    (namespaces,) = [p for p in policies if p["metadata"]["name"] == PROJECT_NAMESPACE_POLICY]
    assert "kube-system" not in repr(namespaces["spec"]["validations"])


def test_peer_labels_are_tied_to_the_platforms_accounts() -> None:
    settings = Settings(
        hub_namespace="jhub",
        hub_service_account="spawner",
        airlock_namespace="out",
        airlock_user="system:serviceaccount:out:gatekeeper",
        dns_namespace="names",
    )
    policy = by_name(plan_admission_policies(settings), "ValidatingAdmissionPolicy")[
        PLATFORM_PEERS_POLICY
    ]
    selector = policy["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"]
    assert selector == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["jhub", "names", "out"]}
    ]
    rules = [v["expression"] for v in policy["spec"]["validations"]]
    assert rules == [
        f'!(request.namespace == "{ns}" && "{key}" in variables.labels && '
        f'variables.labels["{key}"] == "{value}") || variables.account == "{account}"'
        for ns, key, value, account in (
            ("jhub", "component", "hub", "spawner"),
            ("jhub", "component", "proxy", "tre-proxy"),
            ("out", "app.kubernetes.io/name", "tre-airlock", "gatekeeper"),
            ("names", "app.kubernetes.io/name", "tre-dns", "tre-dns"),
        )
    ]
    # an airlock identity that is no account of its namespace: nobody wears the label
    elsewhere = Settings(airlock_user="airlock-robot")
    policy = by_name(plan_admission_policies(elsewhere), "ValidatingAdmissionPolicy")[
        PLATFORM_PEERS_POLICY
    ]
    assert policy["spec"]["validations"][2]["expression"].endswith('variables.account == ""')
