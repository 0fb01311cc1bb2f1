"""`tre check --probe-from-pods`: run the probe pods and collect what they saw (the I/O).

The plan and the verdicts are `provisioner.planning.runtime_probes` (pure); this module only
creates the pods, polls them with one LIST per round (a label selector on this run's id,
across namespaces), reads the probers' termination messages and deletes every pod it made,
also when the bound passes, an error is raised or the user presses Ctrl-C (a `finally`; the
pods' activeDeadlineSeconds ends them should even that be skipped, e.g. on SIGKILL).

Pods are created by `as_hub`, the admin's client impersonating the hub's ServiceAccount: the
only identity the pod admission policy admits in a project namespace (runtime_probes.py
explains why this is the legitimate path, not a weakened rule). Reads and deletes are the
admin's own.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from provisioner.errors import TreError
from provisioner.kube.api import Kube
from provisioner.kube.resources import NODES, PODS
from provisioner.models.resources import Workspace
from provisioner.models.settings import Settings
from provisioner.planning import compliance, names
from provisioner.planning import runtime_probes as rp

SCRIPT: Final = Path(__file__).with_name("probe_script.py")
POLL_SECONDS = 0.5
_ROLE_NAMES: Final = {rp.LISTENER: "listener", rp.PROBER: "prober"}


@dataclass(frozen=True)
class RuntimeProbes:
    """What the caller chose: `--outside` targets, how long pods may take to run (seconds),
    who runs the check (recorded on the pods), and a client impersonating the hub."""

    outside: Sequence[rp.Address]
    bound_seconds: float
    operator: str
    as_hub: Callable[[], Kube]


def runtime_findings(
    admin: Kube,
    settings: Settings,
    workspaces: Sequence[Workspace],
    apiserver: Sequence[rp.Address],
    probes: RuntimeProbes,
) -> list[compliance.Finding]:
    """The runtime findings of every workspace in `workspaces` (Ready ones)."""
    if not workspaces:
        return []
    try:
        nodes = rp.ready_nodes(admin.list(NODES))
    except TreError as exc:
        return [f for ws in workspaces for f in rp.unproven(ws.name, f"cannot list nodes: {exc}")]
    if not nodes:
        why = "no Ready node in the cluster: the probes need a node to run on"
        return [f for ws in workspaces for f in rp.unproven(ws.name, why)]
    run = _Run(admin, probes.as_hub(), settings, probes, uuid.uuid4().hex[:8])
    try:
        with _terminate_as_interrupt():
            return run.findings(workspaces, apiserver, nodes)
    finally:
        run.delete_pods()


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI job cancelled, `timeout`) raises KeyboardInterrupt like Ctrl-C while
    pods exist, so the `finally` that deletes them runs; by default it would end the process
    on the spot. Only the main thread may set handlers (a test's runner may be elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Run:
    def __init__(
        self, admin: Kube, hub: Kube, settings: Settings, probes: RuntimeProbes, run_id: str
    ) -> None:
        self.admin, self.hub, self.settings, self.probes = admin, hub, settings, probes
        self.run_id = run_id
        self.script = SCRIPT.read_text()
        self.deadline = time.monotonic() + probes.bound_seconds
        self.created: list[tuple[str, str]] = []  # (namespace, name)

    def findings(
        self,
        workspaces: Sequence[Workspace],
        apiserver: Sequence[rp.Address],
        nodes: Sequence[rp.Node],
    ) -> list[compliance.Finding]:
        outcomes: dict[str, rp.Outcome] = {}
        members = {}
        for ws in workspaces:
            if ws.spec.members:
                members[ws.name] = ws.spec.members[0]
            else:
                outcomes[ws.name] = "the workspace has no member to start a pod for"
        # Listeners first, all running, so that every prober finds every peer listening.
        listener = rp.listener_spec(self.settings)
        for project, member in members.items():
            error = self._create(project, member, rp.LISTENER, listener)
            if error:
                outcomes[project] = error
        started = [p for p in members if p not in outcomes]
        progress = self._wait(rp.LISTENER, started, lambda p: p.running or p.ended)
        listeners = {}
        for project in started:
            state = progress.get(project)
            if state is not None and state.running and state.ip:
                listeners[project] = state.ip
            else:
                outcomes[project] = self._not_running(rp.LISTENER, state)
        plans = rp.plan_probes(
            [ws.name for ws in workspaces],
            listeners,
            self.settings,
            apiserver,
            self.probes.outside,
            nodes,
        )
        for project in listeners:
            error = self._create(project, members[project], rp.PROBER, plans[project].spec())
            if error:
                outcomes[project] = error
        probing = [p for p in listeners if p not in outcomes]
        progress = self._wait(rp.PROBER, probing, lambda p: p.ended)
        for project in probing:
            state = progress.get(project)
            if state is None or not state.ended:
                outcomes[project] = self._not_running(rp.PROBER, state)
                continue
            try:
                outcomes[project] = rp.parse_results(state.message)
            except ValueError as exc:
                outcomes[project] = f"the prober of {project} ended without results: {exc}"
        return rp.judge_runtime(plans, outcomes)

    def _create(self, project: str, member: str, role: str, spec: dict[str, object]) -> str:
        """Create one probe pod as the hub; the refusal's text when it is refused."""
        pod = rp.probe_pod(
            project,
            member,
            role,
            spec,
            script=self.script,
            run_id=self.run_id,
            operator=self.probes.operator,
            settings=self.settings,
        )
        meta = pod["metadata"]
        try:
            self.hub.create(pod)
        except TreError as exc:
            return (
                f"the {_ROLE_NAMES[role]} pod was not admitted: {exc} (tre check creates it as "
                f"{names.hub_user(self.settings)}, by impersonation)"
            )
        self.created.append((meta["namespace"], meta["name"]))
        return ""

    def _wait(
        self, role: str, projects: Sequence[str], done: Callable[[rp.PodProgress], bool]
    ) -> dict[str, rp.PodProgress]:
        """Poll this run's `role` pods until each is `done` or the bound has passed."""
        progress: dict[str, rp.PodProgress] = {}
        while projects:
            selector = f"{rp.LABEL_CHECK_RUN}={self.run_id},{rp.LABEL_CHECK_PROBE}={role}"
            progress = {
                (pod["metadata"].get("labels") or {}).get(names.LABEL_PROJECT, ""): (
                    rp.pod_progress(pod)
                )
                for pod in self.admin.list(PODS, selector=selector)
            }
            if all(p in progress and done(progress[p]) for p in projects):
                break
            if time.monotonic() > self.deadline:
                break
            time.sleep(POLL_SECONDS)
        return progress

    def _not_running(self, role: str, state: rp.PodProgress | None) -> str:
        if state is None:
            return f"the {_ROLE_NAMES[role]} pod is gone"
        if state.ended:
            return f"the {_ROLE_NAMES[role]} pod ended ({state.waiting}): {state.message[:300]}"
        verb = "run" if role == rp.LISTENER else "finish"
        return (
            f"the {_ROLE_NAMES[role]} pod did not {verb} within {self.probes.bound_seconds:.0f}s "
            f"(--probe-timeout): {state.waiting}"
        )

    def delete_pods(self) -> None:
        for namespace, name in self.created:
            # best effort: its activeDeadlineSeconds ends the pod all the same
            with contextlib.suppress(TreError):
                self.admin.delete(PODS, name, namespace)
