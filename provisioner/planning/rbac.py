"""Who may do what to our custom resources (RBAC), cluster-wide.

RBAC says which verbs a role has; the admission policies (admission.py) then say which
*changes* are allowed. Together: anyone signed in may file requests and read the dataset
catalogue, and reads by name the requests and workspaces that concern them (grants the
controller keeps, planning/read_grants.py); approvers list and read every request and
workspace, since they decide on all of them; stewards register datasets (and the policies
let only a dataset's own steward change it), approvers may update requests (and the policies
restrict an update to appending their own decision),
and only the controller writes statuses (dataset manifests included) and Workspaces, except
an export's release, revocation and access records, which only the airlock writes. The airlock
acts on a person's behalf by constrained impersonation, limited to exports.
"""

from __future__ import annotations

from typing import Any

from provisioner import API_GROUP
from provisioner.models.settings import Settings
from provisioner.planning.names import (
    AIRLOCK_VIA_EXTRA,
    AIRLOCK_VIA_VALUE,
    AIRLOCK_WORKSPACE_EXTRA,
    EXPORT_AUTHOR_ROLE_NAME,
    HUB_CLUSTER_ROLE_NAME,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    SYSTEM_NAMESPACE,
    hub_user,
    service_account_of,
)

STEWARD_GROUP = "tre:stewards"
AIRLOCK_ROLE_NAME = "tre-airlock"
HUB_READER_ROLE_NAME = "tre-hub-workspaces"


def _role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
        "rules": rules,
    }


def _binding(name: str, role: str, group: str) -> dict[str, Any]:
    return _subject_binding(
        name, role, {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}
    )


def _subject_binding(name: str, role: str, subject: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [subject],
    }


def system_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    """A Role in the platform's own namespace (tre-system)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {
            "name": name,
            "namespace": SYSTEM_NAMESPACE,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY},
        },
        "rules": rules,
    }


def system_role_binding(role: str, subject: dict[str, str]) -> dict[str, Any]:
    """A RoleBinding of `system_role(role)` to one subject, named like the role."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": role,
            "namespace": SYSTEM_NAMESPACE,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
        "subjects": [subject],
    }


def user_subject(username: str) -> dict[str, str]:
    """A ServiceAccount username becomes a ServiceAccount subject, anything else a User."""
    account = service_account_of(username)
    if account is not None:
        return {"kind": "ServiceAccount", "namespace": account[0], "name": account[1]}
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": username}


def _controller_rules() -> list[dict[str, Any]]:
    read = ["get", "list", "watch"]
    write = [*read, "create", "patch", "update", "delete"]
    return [
        {
            "apiGroups": [""],
            "resources": [
                "namespaces",
                "resourcequotas",
                "limitranges",
                "serviceaccounts",
                "persistentvolumes",
                "persistentvolumeclaims",
                "configmaps",
            ],
            "verbs": write,
        },
        # notebooks that lose access are stopped; admission confines the deletes to project
        # namespaces (policy tre-controller-scope), as it does every write above
        # watch: each notebook's start and stop is audited from the pods the controller sees
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "delete"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": write},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": write},
        # binding the hub's and the export authors' roles in a workspace needs `bind` on them
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["clusterroles"],
            "verbs": ["bind"],
            "resourceNames": [HUB_CLUSTER_ROLE_NAME, EXPORT_AUTHOR_ROLE_NAME],
        },
        {"apiGroups": [API_GROUP], "resources": ["datasets"], "verbs": read},
        # patch: its finalizer on requests and exports, set and lifted by the controller only;
        # the update policies refuse it any change of their spec (admission.py)
        {
            "apiGroups": [API_GROUP],
            "resources": ["accessrequests", "exportrequests"],
            "verbs": [*read, "patch"],
        },
        # the people's read grants (planning/read_grants.py): it holds every right they carry
        # (get on requests and workspaces), so RBAC lets it grant them without `escalate` or
        # `bind`; policies tre-controller-read-grant* keep its writes to exactly those grants
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["clusterroles", "clusterrolebindings"],
            "verbs": write,
        },
        {
            "apiGroups": [API_GROUP],
            # datasets/status: the controller verifies each dataset's content itself
            "resources": ["accessrequests/status", "workspaces/status", "datasets/status"],
            "verbs": ["get", "patch", "update"],
        },
        {"apiGroups": [API_GROUP], "resources": ["workspaces"], "verbs": write},
        # the browser gates' records, which the airlock files: audited, then deleted
        {
            "apiGroups": [API_GROUP],
            "resources": ["browseractivities"],
            "verbs": [*read, "delete"],
        },
        {
            "apiGroups": [API_GROUP],
            "resources": ["exportrequests/status"],
            "verbs": ["get", "patch", "update"],
        },
    ]


# Constrained impersonation (KEP-5284, kube-apiserver 1.36 beta, on by default): the verbs
# `impersonate:<mode>` say whom a caller may impersonate, `impersonate-on:<mode>:<verb>` what
# it may do as them. Mode `user-info` covers people only: the API server routes a
# ServiceAccount or node username to modes of their own (`serviceaccount`, `*-node`), which
# the airlock is never granted, and refuses system:masters in every constrained mode.
IMPERSONATION_GROUP = "authentication.k8s.io"
IMPERSONATE_PEOPLE = "impersonate:user-info"
# What the airlock does on a person's behalf: file an export (create), append a review or
# withdraw (update, patch). Not get/list/delete, not the status subresource.
AIRLOCK_ACTS_AS_PERSON = ("create", "update", "patch")


def _airlock_rules(settings: Settings) -> list[dict[str, Any]]:
    read = ["get", "list", "watch"]
    return [
        # what the pages show and the release needs: the exports, the workspace behind
        # them (members, datasets), the datasets' manifests and the access requests (the
        # release manifest names them)
        {
            "apiGroups": [API_GROUP],
            "resources": ["exportrequests", "workspaces", "datasets", "accessrequests"],
            "verbs": read,
        },
        # its own records: release, revocation, access (admission judges which and when)
        {
            "apiGroups": [API_GROUP],
            "resources": ["exportrequests/status"],
            "verbs": ["get", "patch", "update"],
        },
        # the browser gates' records: a gate proves which pod it is with the pod's own token
        # (audience `tre-gate`), which the airlock checks with a TokenReview; it files each
        # batch as a BrowserActivity in the pod's namespace (never reads or changes one)
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["tokenreviews"],
            "verbs": ["create"],
        },
        {"apiGroups": [API_GROUP], "resources": ["browseractivities"], "verbs": ["create"]},
        # whom it may be: any person (not a ServiceAccount, not a node: other modes) ...
        {"apiGroups": [IMPERSONATION_GROUP], "resources": ["users"], "verbs": [IMPERSONATE_PEOPLE]},
        # ... with no group but the output checkers' (no uid) ...
        {
            "apiGroups": [IMPERSONATION_GROUP],
            "resources": ["groups"],
            "verbs": [IMPERSONATE_PEOPLE],
            "resourceNames": [settings.output_checker_group],
        },
        # ... and one extra, its own mark (`tre.ucloud.org/via: airlock`), without which the
        # export policies refuse a person's change: people change exports only through it
        {
            "apiGroups": [IMPERSONATION_GROUP],
            "resources": [f"userextras/{AIRLOCK_VIA_EXTRA}"],
            "verbs": [IMPERSONATE_PEOPLE],
            "resourceNames": [AIRLOCK_VIA_VALUE],
        },
        # ... and, for a call made with a notebook's token, that notebook's project (any
        # value: it only narrows what the policies admit)
        {
            "apiGroups": [IMPERSONATION_GROUP],
            "resources": [f"userextras/{AIRLOCK_WORKSPACE_EXTRA}"],
            "verbs": [IMPERSONATE_PEOPLE],
        },
        # ... and as them only file, review and withdraw exports (the person's own RBAC and
        # the export policies then judge the person)
        {
            "apiGroups": [API_GROUP],
            "resources": ["exportrequests"],
            "verbs": [f"impersonate-on:user-info:{verb}" for verb in AIRLOCK_ACTS_AS_PERSON],
        },
    ]


def plan_platform_rbac(settings: Settings) -> list[dict[str, Any]]:
    read = ["get", "list", "watch"]
    return [
        # everyone signed in: file requests (at most TRE_MAX_OPEN_REQUESTS open, policy
        # tre-accessrequest-open-limit) and read the dataset catalogue to choose from. No read
        # of requests or workspaces: each person gets `get` on exactly those that concern
        # them, by name, from the controller (planning/read_grants.py)
        _role(
            "tre-requester",
            [
                {"apiGroups": [API_GROUP], "resources": ["accessrequests"], "verbs": ["create"]},
                {"apiGroups": [API_GROUP], "resources": ["datasets"], "verbs": read},
            ],
        ),
        _binding("tre-requester", "tre-requester", "system:authenticated"),
        # data-access committee: read every request and workspace (they decide on all of
        # them, judging the whole project), append decisions (admission restricts the update)
        _role(
            "tre-approver",
            [
                {
                    "apiGroups": [API_GROUP],
                    "resources": ["accessrequests"],
                    "verbs": [*read, "update"],
                },
                {"apiGroups": [API_GROUP], "resources": ["workspaces"], "verbs": read},
            ],
        ),
        _binding("tre-approver", "tre-approver", settings.approver_group),
        # data stewards: register datasets and change their own (admission policies). Not
        # `datasets/status`: the manifest that approvals pin is the controller's own listing,
        # so a steward cannot make a hash match data that changed.
        _role(
            "tre-steward",
            [
                {
                    "apiGroups": [API_GROUP],
                    "resources": ["datasets"],
                    "verbs": [*read, "create", "update"],
                },
            ],
        ),
        _binding("tre-steward", "tre-steward", STEWARD_GROUP),
        # the controller: exactly what reconciling workspaces needs, nothing more
        _role("tre-controller", _controller_rules()),
        _subject_binding(
            "tre-controller", "tre-controller", user_subject(settings.controller_user)
        ),
        # its Lease (leader election) only in its own namespace
        system_role(
            "tre-controller-lease",
            [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["get", "create", "update"],
                }
            ],
        ),
        system_role_binding("tre-controller-lease", user_subject(settings.controller_user)),
        # members of a Ready workspace, through its RoleBinding: file and withdraw exports
        # No read: reviews under review are hidden from the project's people, and the
        # airlock shows each person what they may see. The verbs are there because the
        # airlock's writes are impersonated and so authorized as the person; the export
        # policies refuse a person's write that does not come through the airlock.
        _role(
            EXPORT_AUTHOR_ROLE_NAME,
            [
                {
                    "apiGroups": [API_GROUP],
                    "resources": ["exportrequests"],
                    "verbs": ["create", "update"],
                }
            ],
        ),
        # output checkers: append reviews, through the airlock only (admission restricts how);
        # no read, so no checker sees another's review before the decision
        _role(
            "tre-output-checker",
            [
                {
                    "apiGroups": [API_GROUP],
                    "resources": ["exportrequests"],
                    "verbs": ["update"],
                }
            ],
        ),
        _binding("tre-output-checker", "tre-output-checker", settings.output_checker_group),
        # the airlock: read what it shows, write its own status records, and act as a
        # person (constrained impersonation) only to file, review and withdraw exports
        _role(AIRLOCK_ROLE_NAME, _airlock_rules(settings)),
        _subject_binding(AIRLOCK_ROLE_NAME, AIRLOCK_ROLE_NAME, user_subject(settings.airlock_user)),
        # the hub: its workspace cache (a watch) decides who may start what
        _role(
            HUB_READER_ROLE_NAME,
            [{"apiGroups": [API_GROUP], "resources": ["workspaces"], "verbs": read}],
        ),
        _subject_binding(
            HUB_READER_ROLE_NAME, HUB_READER_ROLE_NAME, user_subject(hub_user(settings))
        ),
        # the hub's ServiceAccount gets this only inside Ready workspaces (RoleBinding)
        _role(
            HUB_CLUSTER_ROLE_NAME,
            [
                # pods only: storage comes from the workspace (the controller's PVCs), so the
                # hub can neither create nor delete a claim, nor remove /project.
                {"apiGroups": [""], "resources": ["pods"], "verbs": [*read, "create", "delete"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": read},
            ],
        ),
    ]


def plan_airlock_identity(settings: Settings) -> list[dict[str, Any]]:
    """The airlock's namespace, apart from the controller's and the hub's, and its
    ServiceAccount there when `airlock_user` names one in it (as for the controller).

    In a cluster the airlock's pod runs as this account; locally `airlock_kubeconfig`
    (devcluster/airlock.py) writes a kubeconfig with its token. Pod Security `restricted`:
    the service needs nothing more.
    """
    labels = {LABEL_MANAGED_BY: MANAGED_BY}
    objects: list[dict[str, Any]] = []
    if settings.airlock_namespace not in (SYSTEM_NAMESPACE, settings.hub_namespace):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": settings.airlock_namespace,
                    "labels": {
                        **labels,
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": settings.psa_version,
                    },
                },
            }
        )
    account = service_account_of(settings.airlock_user)
    if account is not None and account[0] == settings.airlock_namespace:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {
                    "name": account[1],
                    "namespace": settings.airlock_namespace,
                    "labels": labels,
                },
            }
        )
    return objects
