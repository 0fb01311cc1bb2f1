"""Who may start which notebook server: security invariant 2, decided from Workspaces only.

"A user can start a server only in a Ready workspace that lists them; otherwise a clear
refusal." The hub reads Workspaces (written only by the controller), never AccessRequests.

One named server per project: the server's name is the project slug. So the name alone says
which workspace a server belongs to, a user can run two projects side by side, and a server
can never drift into another project's namespace. The default server (empty name) belongs to
no project and is refused with the list of projects the user may start.

The decision is pure (`choose_workspace`, `profiles_for`): lists of Workspaces in, a workspace,
profiles or a `SpawnRefused` out. The thin async glue below feeds it:

- `make_profile_list(reader)` is KubeSpawner's callable `profile_list`. KubeSpawner calls it
  when it renders the spawn form and again in `load_user_options()`, the first step of every
  start, so each start decides on a fresh read. It returns exactly one profile, the chosen
  workspace's, whose `kubespawner_override` sets the namespace, volumes and mounts. A
  `profile` slug in user_options naming anything else is rejected by KubeSpawner itself
  ("No such profile"), and the profiles have no user-editable options.
- `confine_pod` is KubeSpawner's `modify_pod_hook`, the last step before the pod is created
  (profile overrides run after `pre_spawn_hook`, so that hook could not enforce anything). It
  refuses a pod whose namespace is not the one derived from the server's project, so a
  spawner that somehow skipped the profile fails closed.
- `read_workspaces_from_cluster` is the default reader: it lists Workspaces with the hub's own
  credentials. Tests inject a reader that returns fixed Workspaces.

Rules in order, each with its own message (`SpawnRefused`):
1. an empty server name: no project, so no server;
2. no Workspace of that name: no such project;
3. a phase other than Ready: Frozen, TornDown or still Provisioning. Checked before membership
   because a workspace that is not Ready lists nobody (the controller clears its members), so
   a former member would otherwise hear "not a member" instead of "Frozen";
4. the user is not in `spec.members`;
5. the Workspace does not derive its namespace from its name, would land in a namespace the
   hub must never spawn into (its own, the airlock's), or lists a dataset twice: refused as
   inconsistent, since the controller never writes such a Workspace.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from provisioner.errors import InvalidInputError, RefusedError
from provisioner.models.resources import Workspace, WorkspacePhase
from provisioner.models.rules import validate_project_slug
from provisioner.planning import names
from provisioner.planning.storage import (
    PROJECT_MOUNT_PATH,
    dataset_mount_path,
    notebook_storage,
    workspace_datasets,
)

if TYPE_CHECKING:
    from provisioner.kube.api import Kube

log = logging.getLogger(__name__)

Profile = dict[str, Any]
# Returns every Workspace the hub can see; the decision filters them.
WorkspaceReader = Callable[[], Awaitable[Sequence[Workspace]]]
ProfileList = Callable[[Any], Coroutine[Any, Any, list[Profile]]]

_PHASE_REASONS: Final = {
    WorkspacePhase.FROZEN: (
        "is Frozen: it has no active approval, so its data is no longer mounted (its "
        "/project files are kept); the project lead can request an extension"
    ),
    WorkspacePhase.TORN_DOWN: (
        "was torn down after its retention period; its outputs are archived. File a new "
        "access request to work on it again"
    ),
    WorkspacePhase.PROVISIONING: (
        "is still being provisioned; try again when it is Ready (usually within a minute)"
    ),
}


class SpawnRefused(RefusedError):
    """The hub will not start this server. The message names the project, why and what to do.

    JupyterHub shows `jupyterhub_message` on the spawn page and in the progress stream
    ("Spawn failed: ..."); without it some pages show only a generic error.
    """

    @property
    def jupyterhub_message(self) -> str:
        return str(self)


# --- the pure decision -----------------------------------------------------------------------


def choose_workspace(
    user: str,
    server_name: str,
    workspaces: Sequence[Workspace],
    *,
    forbidden_namespaces: Collection[str] = (),
) -> Workspace:
    """The workspace that `user`'s server `server_name` runs in, or `SpawnRefused`."""
    if not server_name:
        raise SpawnRefused(
            "cannot start a default server: every project has its own named server; "
            f"{_start_hint(user, workspaces, forbidden_namespaces)}"
        )
    by_name = {workspace.name: workspace for workspace in workspaces}
    workspace = by_name.get(server_name)
    if workspace is None:
        raise SpawnRefused(
            f"cannot start server {server_name!r}: there is no project {server_name!r}; "
            f"{_start_hint(user, workspaces, forbidden_namespaces)}"
        )
    refusal = _refusal(user, workspace, forbidden_namespaces)
    if refusal is not None:
        raise SpawnRefused(f"cannot start server {server_name!r}: {refusal}")
    return workspace


def profiles_for(
    user: str,
    workspaces: Sequence[Workspace],
    *,
    forbidden_namespaces: Collection[str] = (),
) -> list[Profile]:
    """KubeSpawner profiles, one per Ready workspace that lists `user`, sorted by project.

    The same rules as `choose_workspace`, so the list never offers what a start would refuse.
    The first profile is the default.
    """
    allowed = sorted(
        (ws for ws in workspaces if _refusal(user, ws, forbidden_namespaces) is None),
        key=lambda ws: ws.name,
    )
    return [workspace_profile(ws, default=index == 0) for index, ws in enumerate(allowed)]


def workspace_profile(workspace: Workspace, *, default: bool = False) -> Profile:
    """The KubeSpawner profile of one workspace: where its notebook runs and what it mounts.

    Only plain values and lists are overridden: KubeSpawner *merges* a dict override into the
    trait's current dict in place, which for a dict shared through the hub's config would leak
    one project's values into another user's spawner.
    """
    storage = notebook_storage(workspace)
    return {
        "slug": workspace.name,
        "display_name": f"Project {workspace.name}",
        "description": _description(workspace),
        "default": default,
        "kubespawner_override": {
            # Derived from the project, never read from spec.namespace (see _refusal).
            "namespace": names.namespace_name(workspace.name),
            "volumes": storage.volumes,
            "volume_mounts": storage.volume_mounts,
        },
    }


def _refusal(user: str, workspace: Workspace, forbidden_namespaces: Collection[str]) -> str | None:
    """Why `user` may not start a server in `workspace`, or None if they may (rules 3-5)."""
    project = workspace.name
    phase = workspace.status.phase
    if phase is not WorkspacePhase.READY:
        return f"project {project!r} {_PHASE_REASONS[phase]}"
    if user not in workspace.spec.members:
        return (
            f"user {user!r} is not a member of project {project!r}; ask its project lead to "
            "add you with an amendment request"
        )
    expires = workspace.spec.expires_at
    if expires is not None and expires < dt.datetime.now(dt.UTC).date():
        # The controller freezes it at the next pass; until then the end date still holds.
        return (
            f"project {project!r} ended on {expires.isoformat()}; ask its project lead to "
            "request an extension"
        )
    expected = names.namespace_name(project)
    if (
        workspace.spec.project != project
        or workspace.spec.namespace != expected
        or expected in forbidden_namespaces
    ):
        return (
            f"project {project!r} is inconsistent (spec.project {workspace.spec.project!r}, "
            f"spec.namespace {workspace.spec.namespace!r}, expected {expected!r} outside the "
            "hub's and the airlock's namespaces); tell the platform admins"
        )
    try:
        workspace_datasets(workspace)
    except InvalidInputError as exc:
        return f"project {project!r} is inconsistent ({exc}); tell the platform admins"
    return None


def _start_hint(user: str, workspaces: Sequence[Workspace], forbidden: Collection[str]) -> str:
    projects = [
        profile["slug"]
        for profile in profiles_for(user, workspaces, forbidden_namespaces=forbidden)
    ]
    if not projects:
        return (
            f"user {user!r} is in no Ready project yet; ask your project lead to file an "
            "access request that lists you"
        )
    return f"start the server named after one of your projects: {', '.join(projects)}"


def _description(workspace: Workspace) -> str:
    datasets = workspace_datasets(workspace)
    if datasets:
        data = "Approved data, read-only: " + ", ".join(
            dataset_mount_path(dataset.name) for dataset in datasets
        )
    else:
        data = "No datasets approved yet"
    parts = [
        data,
        f"shared project files: {PROJECT_MOUNT_PATH}",
        f"compute tier: {workspace.spec.compute_tier.value}",
    ]
    if workspace.spec.expires_at is not None:
        parts.append(f"approved until {workspace.spec.expires_at.isoformat()}")
    return "; ".join(parts) + "."


# --- the thin async glue ---------------------------------------------------------------------


def make_profile_list(
    reader: WorkspaceReader, *, forbidden_namespaces: Collection[str] = ()
) -> ProfileList:
    """KubeSpawner's callable `profile_list`: the one profile of the server's project."""
    forbidden = frozenset(forbidden_namespaces)

    async def profile_list(spawner: Any) -> list[Profile]:
        workspaces = await reader()
        workspace = choose_workspace(
            spawner.user.name, spawner.name, workspaces, forbidden_namespaces=forbidden
        )
        return [workspace_profile(workspace, default=True)]

    return profile_list


def confine_pod(spawner: Any, pod: Any) -> Any:
    """KubeSpawner's `modify_pod_hook`: refuse a pod outside its project's namespace.

    The profile already set the namespace; this is the last check before the create call, so
    a start that bypassed the profile (a KubeSpawner change, a config mistake) fails closed
    instead of landing in the hub's namespace or another project's.
    """
    server_name = spawner.name or ""
    try:
        validate_project_slug(server_name)
    except ValueError:
        raise SpawnRefused(
            f"cannot start server {server_name!r}: it is not named after a project"
        ) from None
    expected = names.namespace_name(server_name)
    if spawner.namespace != expected:
        raise SpawnRefused(
            f"cannot start server {server_name!r}: its pod would run in namespace "
            f"{spawner.namespace!r}, not the project's {expected!r}; tell the platform admins"
        )
    # Admission and the controller match the pod to a member by this annotation.
    pod.metadata.annotations = {
        **(pod.metadata.annotations or {}),
        names.ANNOTATION_USER: spawner.user.name,
    }
    if pod.spec.automount_service_account_token is not False:
        raise SpawnRefused(
            f"cannot start server {server_name!r}: its pod would mount a ServiceAccount "
            "token (KubeSpawner.automount_service_account_token must be False); tell the "
            "platform admins"
        )
    return pod


async def read_workspaces_from_cluster() -> list[Workspace]:
    """Every Workspace, read with the hub's own credentials (in-cluster or $KUBECONFIG).

    The client is synchronous, so the call runs in a worker thread and the hub's event loop
    keeps serving. A Workspace that does not parse is skipped with a warning: it offers
    nobody a server, and it must not stop everyone else's.
    """
    return await asyncio.to_thread(_list_workspaces)


def _list_workspaces() -> list[Workspace]:
    from provisioner.kube.resources import WORKSPACES  # I/O edge, loaded late

    workspaces: list[Workspace] = []
    for obj in _cluster().list(WORKSPACES):
        try:
            workspaces.append(Workspace.from_object(obj))
        except (ValidationError, KeyError) as exc:
            name = obj.get("metadata", {}).get("name", "?")
            log.warning("skipping Workspace %s: it does not parse (%s)", name, exc)
    return workspaces


@functools.cache
def _cluster() -> Kube:
    # Imported here, not at module level: importing hub_config must not load a Kubernetes
    # client or read credentials (the config functions are pure; tests need no cluster).
    from provisioner.kube.api import Kube
    from provisioner.kube.client import api_client

    return Kube(api_client())
