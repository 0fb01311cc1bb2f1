"""Who reads which AccessRequests and Workspaces: per person, exactly those that concern them.

Kubernetes RBAC cannot filter a list by content, and `resourceNames` restricts get but not
list or watch. So people get no list on AccessRequests or Workspaces at all (planning/rbac.py:
only approvers, who decide on every request, and the platform's services list them), and the
controller grants each person `get` on exactly the objects that concern them, by name:

- the project's people (the members and owner of its Workspace, as this reconcile plans it)
  read every request filed for the project (its history, its amendments, and anyone else's
  claim on its slug) and the Workspace itself;
- everyone else named on a request (requester, lead, member) reads that request only: a
  rival's or an outsider's pending request does not open the project to them.

One ClusterRole and one ClusterRoleBinding per (project, person), both named
`names.read_grant_name`, labelled with the project like every other object the controller
owns, so the project's reconcile writes and prunes them with the rest (a member removed loses
the project's reads in the same pass). The grants double as each person's index: `tre`
finds the names it may read with a SelfSubjectRulesReview (cli/views.py), so no second copy
of the list exists to drift from the rights.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from provisioner import API_GROUP
from provisioner.models.resources import AccessRequest
from provisioner.planning import names
from provisioner.planning.rbac import user_subject

_RBAC_API: str = "rbac.authorization.k8s.io/v1"


def request_people(request: AccessRequest) -> set[str]:
    """Everyone a request names: requester, lead and members."""
    return {request.spec.requester, request.spec.lead, *request.spec.members}


def readers(
    requests: Sequence[AccessRequest], project_people: Collection[str]
) -> dict[str, tuple[list[str], bool]]:
    """Per person: the names of the requests they read (sorted) and whether they read the
    Workspace. `project_people` is empty when the project has no Workspace to read."""
    everyone = set(project_people).union(*(request_people(r) for r in requests))
    every_request = sorted(r.name for r in requests)
    grants: dict[str, tuple[list[str], bool]] = {}
    for person in sorted(everyone):
        if person in project_people:
            grants[person] = (every_request, True)
        else:
            grants[person] = (
                sorted(r.name for r in requests if person in request_people(r)),
                False,
            )
    return grants


def plan_read_grants(
    project: str, requests: Sequence[AccessRequest], project_people: Collection[str]
) -> list[dict[str, Any]]:
    """Each person's ClusterRole, then its binding, in name order."""
    planned: list[dict[str, Any]] = []
    for person, (request_names, workspace) in readers(requests, project_people).items():
        name = names.read_grant_name(project, person)
        metadata = names.object_metadata(
            name, project, annotations={names.ANNOTATION_READER: person}
        )
        rules = []
        if request_names:
            rules.append(_get("accessrequests", request_names))
        if workspace:
            rules.append(_get("workspaces", [project]))
        planned.append(
            {"apiVersion": _RBAC_API, "kind": "ClusterRole", "metadata": metadata, "rules": rules}
        )
        planned.append(
            {
                "apiVersion": _RBAC_API,
                "kind": "ClusterRoleBinding",
                "metadata": metadata,
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": name,
                },
                "subjects": [user_subject(person)],
            }
        )
    return sorted(planned, key=lambda m: (m["metadata"]["name"], m["kind"] != "ClusterRole"))


def _get(resource: str, resource_names: list[str]) -> dict[str, Any]:
    return {
        "apiGroups": [API_GROUP],
        "resources": [resource],
        "verbs": ["get"],
        "resourceNames": resource_names,
    }
