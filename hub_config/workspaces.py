"""Who may start which notebook server: security invariant 2, decided from Workspaces only.

"A user can start a server only in a Ready workspace that lists them; otherwise a clear
refusal." The hub reads Workspaces (written only by the controller), never AccessRequests.

One named server per project: the server's name is the project slug. So the name alone says
which workspace a server belongs to, a user can run two projects side by side, and a server
can never drift into another project's namespace. The default server (empty name) belongs to
no project and is refused with the list of projects the user may start.

The decision is pure (`choose_workspace`, `profiles_for`): lists of Workspaces in, a workspace,
profiles or a `SpawnRefused` out. The thin async glue below feeds it:

- `make_profile_list(reader, settings)` is KubeSpawner's callable `profile_list`. KubeSpawner
  calls it when it renders the spawn form and again in `load_user_options()`, the first step
  of every start, so each start decides on the cache as it is then. It returns exactly one profile,
  the chosen workspace's, whose `kubespawner_override` sets the namespace, volumes and mounts. A
  `profile` slug in user_options naming anything else is rejected by KubeSpawner itself
  ("No such profile"), and the profiles have no user-editable options.
- `confine_pod` is KubeSpawner's `modify_pod_hook`, the last step before the pod is created
  (profile overrides run after `pre_spawn_hook`, so that hook could not enforce anything). It
  refuses a pod whose namespace is not the one derived from the server's project, so a
  spawner that somehow skipped the profile fails closed.
- `read_workspaces_from_cluster` is the default reader: the hub's `WorkspaceCache`, a copy of
  every Workspace in memory kept current by a watch with the hub's own credentials, so a page
  view or a start costs no API call. Until its first list has completed (or while its watch
  has been broken for long) it refuses every start. Tests inject a reader that returns fixed
  Workspaces.

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

import datetime as dt
import functools
import logging
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError
from tornado.web import HTTPError

from provisioner.errors import InvalidInputError, RefusedError
from provisioner.models.resources import BrowserUsage, Workspace, WorkspacePhase
from provisioner.models.rules import validate_project_slug
from provisioner.models.settings import Settings
from provisioner.planning import names, notebook_pods
from provisioner.planning.storage import (
    PROJECT_MOUNT_PATH,
    dataset_mount_path,
    notebook_storage,
    workspace_datasets,
)

if TYPE_CHECKING:
    from provisioner.kube.api import Kube
    from provisioner.kube.resources import Resource

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


class SpawnRefused(RefusedError, HTTPError):
    """The hub will not start this server. The message names the project, why and what to do.

    JupyterHub shows `jupyterhub_message` on the spawn page, in the progress stream ("Spawn
    failed: ...") and in its REST API's error body; without it some pages show only a generic
    error. Also a tornado HTTPError, so the REST API and the spawn page answer with
    `status_code` (403 refused; 400 the server is not named after a project; 503 the hub
    cannot decide yet) instead of 500, which would say the hub is broken. Not 404 for an
    unknown project: JupyterHub's 404 page drops the message and its hint.
    """

    def __init__(self, message: str, status_code: int = 403) -> None:
        HTTPError.__init__(self, status_code)
        self.message = message
        self.args = (message,)  # HTTPError keeps its format arguments there

    def __str__(self) -> str:
        return self.message

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
            f"{_start_hint(user, workspaces, forbidden_namespaces)}",
            status_code=400,
        )
    by_name = {workspace.name: workspace for workspace in workspaces}
    workspace = by_name.get(server_name)
    if workspace is None:
        raise SpawnRefused(
            f"cannot start server {server_name!r}: there is no project {server_name!r}; "
            f"{_start_hint(user, workspaces, forbidden_namespaces)}",
            status_code=400,
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


def workspace_profile(
    workspace: Workspace, *, default: bool = False, gate: dict[str, Any] | None = None
) -> Profile:
    """The KubeSpawner profile of one workspace: where its notebook runs, what it mounts and,
    for a start, the browser gate in front of it (`gate`, made per person by
    `make_profile_list`; the spawn form's listing needs none).

    Only plain values and lists are overridden: KubeSpawner *merges* a dict override into the
    trait's current dict in place, which for a dict shared through the hub's config would leak
    one project's values into another user's spawner.
    """
    storage = notebook_storage(workspace)
    override: dict[str, Any] = {
        # Derived from the project, never read from spec.namespace (see _refusal).
        "namespace": names.namespace_name(workspace.name),
        "volumes": storage.volumes,
        "volume_mounts": storage.volume_mounts,
    }
    if gate is not None:
        override["volumes"] = [*storage.volumes, *notebook_pods.gate_volumes()]
        override["extra_containers"] = [gate]
    return {
        "slug": workspace.name,
        "display_name": f"Project {workspace.name}",
        "description": _description(workspace),
        "default": default,
        "kubespawner_override": override,
    }


def used_today(workspace: Workspace, user: str, today: dt.date) -> BrowserUsage | None:
    """What `user`'s browsers received from `workspace` today, as its status says."""
    return next((u for u in workspace.status.browser if u.user == user and u.day == today), None)


def server_prefix(spawner: Any) -> str:
    """The URL prefix of a server, decoded, as the proxy forwards it (JupyterHub's
    Server.base_url: the user's URL, then the escaped server name)."""
    server = getattr(spawner, "server", None)
    base = server.base_url if server is not None else f"{spawner.user.url}{spawner.name}/"
    return urllib.parse.unquote(base)


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
    reader: WorkspaceReader,
    settings: Settings,
    *,
    forbidden_namespaces: Collection[str] = (),
    gate_image: str = notebook_pods.GATE_IMAGE,
) -> ProfileList:
    """KubeSpawner's callable `profile_list`: the one profile of the server's project, with
    the browser gate for this person and the workspace's tier."""
    forbidden = frozenset(forbidden_namespaces)

    async def profile_list(spawner: Any) -> list[Profile]:
        workspaces = await reader()
        workspace = choose_workspace(
            spawner.user.name, spawner.name, workspaces, forbidden_namespaces=forbidden
        )
        gate = notebook_pods.gate_container(
            settings,
            user=spawner.user.name,
            project=workspace.name,
            prefix=server_prefix(spawner),
            tier=notebook_pods.workspace_tier(workspace),
            image=gate_image,
            used_today=used_today(workspace, spawner.user.name, dt.datetime.now(dt.UTC).date()),
        )
        return [workspace_profile(workspace, default=True, gate=gate)]

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
    containers = [_container_name(container) for container in pod.spec.containers or []]
    if notebook_pods.GATE_CONTAINER not in containers:
        raise SpawnRefused(
            f"cannot start server {server_name!r}: its pod has no browser gate (container "
            f"{notebook_pods.GATE_CONTAINER!r}), so the notebook would be reachable without "
            "it; tell the platform admins"
        )
    if pod.spec.automount_service_account_token is not False:
        raise SpawnRefused(
            f"cannot start server {server_name!r}: its pod would mount a ServiceAccount "
            "token (KubeSpawner.automount_service_account_token must be False); tell the "
            "platform admins"
        )
    return pod


def _container_name(container: Any) -> str:
    # KubeSpawner passes extra containers on as the dicts it was given.
    return str(container["name"] if isinstance(container, dict) else container.name)


# --- the in-memory Workspace cache ----------------------------------------------------------


def apply_workspace_event(workspaces: dict[str, Workspace], event: dict[str, Any]) -> str:
    """Apply one watch event to `workspaces` (name -> Workspace); returns the event's
    resourceVersion, to watch on from.

    A Workspace that does not parse is dropped with a warning: it offers nobody a server (fail
    closed, also when an earlier version of it parsed), and it must not stop everyone else's.
    """
    obj = event.get("object") or {}
    metadata = obj.get("metadata") or {}
    name = metadata.get("name", "?")
    kind = event.get("type")
    if kind == "DELETED":
        workspaces.pop(name, None)
    elif kind in ("ADDED", "MODIFIED"):
        parsed = _parse_workspace(obj)
        if parsed is None:
            workspaces.pop(name, None)
        else:
            workspaces[name] = parsed
    # BOOKMARK: only the version moves on.
    return str(metadata.get("resourceVersion", ""))


def workspaces_from_list(items: Sequence[dict[str, Any]]) -> dict[str, Workspace]:
    parsed = ((obj["metadata"]["name"], _parse_workspace(obj)) for obj in items)
    return {name: workspace for name, workspace in parsed if workspace is not None}


def _parse_workspace(obj: dict[str, Any]) -> Workspace | None:
    try:
        return Workspace.from_object(obj)
    except (ValidationError, KeyError) as exc:
        name = (obj.get("metadata") or {}).get("name", "?")
        log.warning("skipping Workspace %s: it does not parse (%s)", name, exc)
        return None


class WorkspaceCache:
    """Every Workspace the hub can see, in memory, kept current by one watch.

    A page view or a start reads memory, never the API server: the cost of a start does not
    grow with the number of workspaces or of people looking. A background thread lists the
    Workspaces, then watches from the list's resourceVersion; when the watch expires (410
    Gone) it lists again at once, after any other error with exponential back-off.

    Fails closed: until the first list has completed, and when the watch has been broken for
    longer than `stale_after` seconds, `read` refuses every start with a message saying why,
    rather than deciding on nothing or on a view that may no longer hold (a revoked member).
    A short break is tolerated: admission still refuses a pod for a workspace that is no
    longer Ready, and the watch resumes from where it was.
    """

    def __init__(
        self,
        kube: Callable[[], Kube],
        *,
        stale_after: float = 30.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        watch_timeout: int = 60,
    ) -> None:
        self._kube = kube
        self._stale_after = stale_after
        self._backoff = backoff
        self._watch_timeout = watch_timeout
        self._lock = threading.Lock()
        self._workspaces: dict[str, Workspace] = {}
        self._synced = False
        self._broken_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WorkspaceCache:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="workspace-cache", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    async def read(self) -> list[Workspace]:
        """The `WorkspaceReader`: every cached Workspace, or SpawnRefused when the cache
        cannot be trusted."""
        return self.snapshot()

    def snapshot(self) -> list[Workspace]:
        with self._lock:
            if not self._synced:
                raise SpawnRefused(
                    "the hub is still reading the workspaces from the cluster, so it cannot "
                    "check your access yet; try again in a few seconds",
                    status_code=503,
                )
            if self._broken_since is not None:
                broken_for = time.monotonic() - self._broken_since
                if broken_for > self._stale_after:
                    raise SpawnRefused(
                        "the hub has lost its view of the workspaces (its watch of the "
                        f"Kubernetes API has failed for {broken_for:.0f}s), so it cannot check "
                        "your access; try again later, and tell the platform admins if this "
                        "lasts",
                        status_code=503,
                    )
            return list(self._workspaces.values())

    def _run(self) -> None:
        from provisioner.kube.api import WatchExpired  # I/O edge, loaded late

        delay = self._backoff[0]
        while not self._stop.is_set():
            try:
                kube = self._kube()
                items, version = kube.list_versioned(_workspaces_resource())
                with self._lock:
                    self._workspaces = workspaces_from_list(items)
                    self._synced = True
                    self._broken_since = None
                delay = self._backoff[0]
                while not self._stop.is_set():
                    for event in kube.watch(
                        _workspaces_resource(),
                        resource_version=version,
                        timeout_seconds=self._watch_timeout,
                        bookmarks=True,
                    ):
                        with self._lock:
                            version = apply_workspace_event(self._workspaces, event) or version
                        if self._stop.is_set():
                            return
            except WatchExpired as exc:
                log.info("Workspace watch expired, listing again: %s", exc)
            except Exception as exc:
                with self._lock:
                    if self._broken_since is None:
                        self._broken_since = time.monotonic()
                log.warning("Workspace watch failed, listing again in %.1fs: %s", delay, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff[1])


def _workspaces_resource() -> Resource:
    from provisioner.kube.resources import WORKSPACES  # I/O edge, loaded late

    return WORKSPACES


@functools.cache
def workspace_cache() -> WorkspaceCache:
    """The hub's one Workspace cache, started on first use (jupyterhub_config.py starts it
    when the hub loads its configuration, so it is synced before the first person arrives)."""
    return WorkspaceCache(_cluster).start()


async def read_workspaces_from_cluster() -> list[Workspace]:
    """The default `WorkspaceReader`: the hub's Workspace cache (never an API call)."""
    return await workspace_cache().read()


@functools.cache
def _cluster() -> Kube:
    # Imported here, not at module level: importing hub_config must not load a Kubernetes
    # client or read credentials (the config functions are pure; tests need no cluster).
    # The official client: watches stream, which the light HttpClient does not.
    from provisioner.kube.api import Kube
    from provisioner.kube.client import api_client

    return Kube(api_client())
