"""Issue 3 benchmark: provision N approved workspaces from nothing, then resync them unchanged.

Run by hand (never from the test suite), from the repository root:

    .venv/bin/python benchmarks/provision_workspaces.py --workspaces 200 --write-docs
    .venv/bin/python benchmarks/provision_workspaces.py --workspaces 5        # smoke run

What happens, on fresh local control planes (provisioner/devcluster), one after the other:

1. Cluster A. Install the platform (CRDs, admission policies, RBAC). Setup, not timed:
   a few Datasets registered by their steward and verified by the controller (its own S3
   client lists the data on the dev platform's S3 server and records the manifest, as on a
   pass), then N AccessRequests, each filed by its requester and approved by two approvers,
   every one of them impersonated, as the admission policies demand; each approval pins the
   datasets' current manifest hash and tier, as `tre request approve` does.
   A (timed): `run_pass` as the controller identity until every workspace is Ready.
   B (timed): unchanged resyncs, `run_pass` again (--resyncs times).
2. Cluster B, the same platform and the same setup. The manifests the controller applied on A
   (`plan_workspace` of every Workspace, plus the Workspace objects) are written to a file, in
   the order the controller creates them (`object_changes` against nothing: it creates a new
   ResourceQuota after the claims).
   C (timed): one `kubectl apply --server-side` over all of them, then one over the same
   statuses the controller wrote (AccessRequest and Workspace status, `--subresource=status`),
   then the same two invocations again, unchanged.
   Steps 1 and 2 are repeated --rounds times (default 3), alternating, each on fresh clusters:
   this machine's speed drifts by tens of percent over minutes (shared VM), so one pair of
   runs can land on a fast and a slow stretch. The report lists every round and details the
   one with the median ratio.
3. Cluster D (skip with --no-plan-order): one `kubectl apply --server-side` of the same
   objects in plan order (the quota before the claims), as a user applying the planner's
   output would: what the creation order is worth to kubectl.
4. Cluster C (skip with --no-per-workspace): one kubectl invocation per workspace, in sequence,
   as a shell loop over workspaces would do it.

kubectl runs with its discovery cache filled beforehand (a kubectl user has one), and with
`--force-conflicts`, which is what the controller's apply does (`force=true`).

Each kubectl side gets its own fresh cluster, because objects already in etcd would turn a
"from nothing" apply into a no-op, and a fresh cluster with the same setup is the same starting
point the controller had. Both sides act as the controller's ServiceAccount with a token from
the TokenRequest API (what the controller has in a cluster; impersonation would add an
authorization check to every request), so the same authentication, RBAC, admission policies
and API priority-and-fairness flow apply to both.

Requests are read from the apiserver's own /metrics (apiserver_request_total by verb and
resource, etcd_requests_total by operation), sampled just before and just after each timed
section, after waiting until the cluster has settled (no write for QUIET_SECONDS). What the
control plane writes on its own schedule (BACKGROUND_RESOURCES: leases, events, the
`kubernetes` endpoints) and non-resource paths (/metrics itself) are left out.
Writes that the client under test did not send (kube-controller-manager binding volumes,
creating the kube-root-ca.crt ConfigMap, the quota admission plugin updating quota usage) do
show in the server counts: the per-resource tables say which is which, and the requests of the
client alone are the dispatch count of its priority-and-fairness flow schema. CPU seconds of
each process (from /proc) are sampled with every window too: on a machine with few cores the
control plane's CPU, not the client, sets the floor, and a busy neighbour shows up as "other
processes".
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from pydantic import SecretStr

from provisioner.controller.datasets import verify_datasets
from provisioner.controller.install import install_platform
from provisioner.controller.loop import DEFAULT_WORKERS, run_pass
from provisioner.devcluster.binaries import K8S_VERSION, pinned_binaries
from provisioner.devcluster.cluster import DevCluster
from provisioner.kube.api import Kube, Manifest
from provisioner.kube.client import api_client, write_service_account_kubeconfig
from provisioner.kube.resources import ACCESS_REQUESTS, DATASETS, RESOURCES, WORKSPACES
from provisioner.models.resources import (
    AccessRequest,
    AccessRequestSpec,
    Dataset,
    DatasetSource,
    DatasetSpec,
    Decision,
    DecisionAction,
    S3Source,
    Workspace,
    WorkspacePhase,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier, ComputeTier
from provisioner.planning.project import object_changes
from provisioner.planning.rbac import STEWARD_GROUP
from provisioner.planning.workspace import plan_workspace
from provisioner.storage.s3 import ensure_bucket, s3_client

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "performance.md"
SECTION_START = "<!-- provision_workspaces: start (benchmarks/provision_workspaces.py) -->"
SECTION_END = "<!-- provision_workspaces: end -->"

DATASETS_COUNT = 4
DATA_BUCKET = "bench-data"
STEWARD = "dana.steward"
REQUESTERS = 10
APPROVERS = ("approver-ada", "approver-bo")
SETUP_THREADS = 8
QUIET_SECONDS = 2.0  # the cluster has settled when no write reached the apiserver this long
READ_VERBS = ("GET", "LIST", "WATCH")
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION")
# Never written by either client under test, and written by the control plane on its own
# schedule: Leases are its heartbeats; the apiserver reconciles the Endpoints of the
# `kubernetes` Service (and its apiServerIPInfo keys in etcd) every 10 s; Events come from
# kube-controller-manager's volume binder, which retries the unbound project claims (the dev
# cluster has no StorageClass) every 15 s.
BACKGROUND_RESOURCES = {"leases", "events", "endpoints", "apiServerIPInfo", "apiServerPeerIPInfo"}
MAX_PASSES = 5
# API priority and fairness puts the controller ServiceAccount, and only it, in
# this flow schema; kube-controller-manager's own ServiceAccounts live in kube-system and match
# `kube-system-service-accounts` first. So this schema's count is the client under test's.
CLIENT_FLOW_SCHEMA = "service-accounts"
IDLE, STEAL, BUSY, OTHER = "idle", "steal", "busy", "other processes"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- apiserver metrics ---------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Metrics:
    """Counters from the apiserver's /metrics (or the difference of two samples)."""

    # (verb, resource, subresource) -> requests, from apiserver_request_total
    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # (operation, resource) -> etcd requests, from etcd_requests_total
    etcd: Counter[tuple[str, str]] = field(default_factory=Counter)
    # API priority and fairness flow schema -> dispatched requests
    flows: Counter[str] = field(default_factory=Counter)

    def __sub__(self, before: Metrics) -> Metrics:
        return Metrics(
            self.requests - before.requests, self.etcd - before.etcd, self.flows - before.flows
        )

    def counted(self) -> Counter[tuple[str, str, str]]:
        """Resource requests without the heartbeats and non-resource paths."""
        return Counter(
            {k: v for k, v in self.requests.items() if k[1] and k[1] not in BACKGROUND_RESOURCES}
        )

    def by_verb(self) -> Counter[str]:
        verbs: Counter[str] = Counter()
        for (verb, _, _), n in self.counted().items():
            verbs[verb] += n
        return verbs

    def reads(self) -> int:
        verbs = self.by_verb()
        return sum(verbs[v] for v in READ_VERBS)

    def writes(self) -> int:
        verbs = self.by_verb()
        return sum(verbs[v] for v in WRITE_VERBS)

    def client(self) -> int:
        """Requests of the client under test: the controller identity's APF flow schema."""
        return self.flows[CLIENT_FLOW_SCHEMA]

    def etcd_writes(self) -> int:
        return sum(
            n
            for (op, resource), n in self.etcd.items()
            if op in ("create", "update", "delete") and resource not in BACKGROUND_RESOURCES
        )


def scrape(api: kubernetes.client.ApiClient) -> Metrics:
    response = api.call_api(
        "/metrics",
        "GET",
        header_params={"Accept": "text/plain"},
        auth_settings=["BearerToken"],
        _preload_content=False,
        _request_timeout=30,
    )
    raw = response[0] if isinstance(response, tuple) else response
    metrics = Metrics()
    for line in raw.data.decode().splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels_text, value = match.groups()
        if name not in (
            "apiserver_request_total",
            "etcd_requests_total",
            "apiserver_flowcontrol_dispatched_requests_total",
        ):
            continue
        labels = dict(_LABEL.findall(labels_text))
        n = round(float(value))
        if name == "apiserver_request_total":
            metrics.requests[(labels["verb"], labels["resource"], labels["subresource"])] += n
        elif name == "etcd_requests_total":
            metrics.etcd[(labels["operation"], labels["resource"])] += n
        else:
            metrics.flows[labels["flow_schema"]] += n
    return metrics


def wait_until_bound(admin: Kube, timeout: float = 300.0) -> None:
    """Wait until every PersistentVolume, and every claim made for one (the dataset claims;
    project storage has no provisioner here and stays Pending), is Bound."""
    volumes = RESOURCES[("v1", "PersistentVolume")]
    claims = RESOURCES[("v1", "PersistentVolumeClaim")]
    deadline = time.monotonic() + timeout
    while True:
        objects = admin.list(volumes) + [
            o for o in admin.list(claims) if o["spec"].get("volumeName")
        ]
        unbound = [o for o in objects if (o.get("status") or {}).get("phase") != "Bound"]
        if not unbound:
            return
        if time.monotonic() > deadline:
            say(f"warning: {len(unbound)} volume(s) or claim(s) not Bound after {timeout:.0f}s")
            return
        time.sleep(1.0)


def wait_until_quiet(api: kubernetes.client.ApiClient, timeout: float = 120.0) -> Metrics:
    """Sample /metrics until no write has reached the apiserver for QUIET_SECONDS."""
    deadline = time.monotonic() + timeout
    last = scrape(api)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = scrape(api)
        if (now - last).writes() or (now - last).etcd_writes():
            quiet_since = time.monotonic()
        last = now
        if time.monotonic() - quiet_since >= QUIET_SECONDS:
            return last
    say(f"warning: the cluster did not settle within {timeout:.0f}s; measuring anyway")
    return last


def cpu_seconds(dev: DevCluster) -> dict[str, float]:
    """CPU time used so far by each control-plane process, this process and its children."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for proc in dev.processes():
        # /proc/<pid>/stat: utime and stime are fields 14 and 15, after "pid (comm)"
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[proc.name] = (int(fields[11]) + int(fields[12])) / ticks
    times = os.times()
    used["python (client)"] = times.user + times.system
    used["kubectl"] = times.children_user + times.children_system
    # The whole machine: what was left idle, and what the hypervisor took (steal).
    cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    used[IDLE] = (cpu[3] + cpu[4]) / ticks
    used[STEAL] = cpu[7] / ticks
    used[BUSY] = (sum(cpu) - cpu[3] - cpu[4] - cpu[7]) / ticks
    return used


@dataclass
class Window:
    """One timed section: wall time, what the apiserver saw, CPU seconds by process."""

    seconds: float
    delta: Metrics
    cpu: dict[str, float]


@contextmanager
def timed(dev: DevCluster, api: kubernetes.client.ApiClient, into: list[Window]) -> Iterator[None]:
    before = wait_until_quiet(api)
    cpu_before = cpu_seconds(dev)
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    cpu_after = cpu_seconds(dev)
    cpu = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
    # Busy time not accounted to the processes above: anything else running on the machine
    # (a noisy neighbour shows here, and makes the run worth repeating).
    cpu[OTHER] = cpu.pop(BUSY) - sum(v for k, v in cpu.items() if k not in (IDLE, STEAL))
    into.append(Window(seconds, scrape(api) - before, cpu))


# --- the client under test, counted on our side too ----------------------------------------------


class CountingKube(Kube):
    """A Kube that also counts its own requests by method (a cross-check of /metrics)."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        super().__init__(api)
        self.sent: Counter[str] = Counter()
        self._lock = threading.Lock()

    def request(self, method: str, path: str, **kwargs: Any) -> Manifest:
        with self._lock:
            self.sent[method] += 1
        return super().request(method, path, **kwargs)


# --- setup: datasets and approved access requests ------------------------------------------------


def project_name(i: int) -> str:
    return f"bench-{i:04d}"


def register_datasets(
    steward: Kube, controller: Kube, settings: Settings, now: dt.datetime
) -> dict[str, Dataset]:
    """DATASETS_COUNT sensitive S3 datasets, registered by their steward and verified by the
    controller as it does on a pass (it lists the data with its own S3 client and records the
    manifest through the status subresource); name -> the dataset as verified."""
    s3 = s3_client(settings)
    ensure_bucket(s3, DATA_BUCKET, versioning=True)
    names = []
    for d in range(DATASETS_COUNT):
        name = f"bench-cohort-{d + 1}"
        for part in range(3):
            s3.put_object(
                Bucket=DATA_BUCKET, Key=f"cohort-{d + 1}/part-{part}.csv", Body=b"a,b\n1,2\n"
            )
        dataset = Dataset(
            name=name,
            spec=DatasetSpec(
                title=f"Benchmark cohort {d + 1} (synthetic)",
                steward=STEWARD,
                classification=ClassificationTier.SENSITIVE,
                source=DatasetSource(s3=S3Source(bucket=DATA_BUCKET, prefix=f"cohort-{d + 1}/")),
            ),
        )
        steward.create(dataset.to_object())
        names.append(name)
    registered = [Dataset.from_object(o) for o in controller.list(DATASETS)]
    checked = verify_datasets(controller, s3, registered, now, settings)
    if not checked or not all(v.ok for v in checked):
        raise SystemExit(f"benchmark setup: dataset verification failed: {checked}")
    verified = {d.name: d for d in (Dataset.from_object(o) for o in controller.list(DATASETS))}
    return {name: verified[name] for name in names}


def file_and_approve(
    i: int,
    requesters: list[Kube],
    approvers: list[Kube],
    datasets_by_name: dict[str, Dataset],
    today: dt.date,
) -> None:
    """Request i: filed by its requester, then one approval by each approver (four eyes),
    each pinning the datasets' current manifest and tier as `tre request approve` does."""
    names = sorted(datasets_by_name)
    # One or two datasets per project, a mix of compute tiers: realistic variety.
    datasets = [names[i % len(names)]] + ([names[(i + 1) % len(names)]] if i % 2 else [])
    requester = f"researcher-{i % REQUESTERS:02d}"
    lead = f"lead-{i % 7:02d}"
    spec = AccessRequestSpec(
        project=project_name(i),
        requester=requester,
        lead=lead,
        members=sorted({requester, lead, f"researcher-{(i + 3) % REQUESTERS:02d}"}),
        datasets=datasets,
        purpose=f"Benchmark project {i}: synthetic workload for issue 3",
        start_date=today,
        end_date=today + dt.timedelta(days=180),
        compute_tier=list(ComputeTier)[i % len(ComputeTier)],
    )
    request = AccessRequest(name=f"{project_name(i)}-access", spec=spec)
    live = requesters[i % REQUESTERS].create(request.to_object())
    for approver, kube in zip(APPROVERS, approvers, strict=True):
        decision = Decision(
            action=DecisionAction.APPROVE,
            by=approver,
            at=dt.datetime.now(dt.UTC).replace(microsecond=0),
            comment="benchmark approval",
            manifest_hashes={d: _manifest_sha(datasets_by_name[d]) for d in datasets},
            classifications={d: datasets_by_name[d].spec.classification for d in datasets},
        )
        live["spec"]["decisions"] = [*live["spec"].get("decisions", []), decision.to_wire()]
        live = kube.replace(live)


def _manifest_sha(dataset: Dataset) -> str:
    assert dataset.status.manifest is not None  # verified in register_datasets
    return dataset.status.manifest.sha256


@dataclass
class Cluster:
    dev: DevCluster
    settings: Settings
    admin_api: kubernetes.client.ApiClient
    admin: Kube
    controller_kubeconfig: Path  # the controller's ServiceAccount token, as in a cluster


def prepare_cluster(
    state_dir: Path, settings_for: Callable[[DevCluster], Settings], n: int
) -> Cluster:
    """A fresh platform with N approved access requests and nothing provisioned."""
    cluster = DevCluster(state_dir)
    cluster.up(lambda m: say(f"  {m}"))
    settings = settings_for(cluster)
    admin_api = api_client(cluster.kubeconfig)
    admin = Kube(admin_api)
    install_platform(admin, settings, lambda m: say(f"  {m}"))
    controller_kubeconfig = write_service_account_kubeconfig(
        admin, cluster.kubeconfig, settings.controller_user, state_dir / "controller.kubeconfig"
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    say(f"setup: {DATASETS_COUNT} datasets, {n} access requests filed and approved twice")
    steward = Kube(api_client(cluster.kubeconfig, as_user=STEWARD, as_groups=(STEWARD_GROUP,)))
    datasets = register_datasets(steward, Kube(api_client(controller_kubeconfig)), settings, now)
    requesters = [
        Kube(api_client(cluster.kubeconfig, as_user=f"researcher-{r:02d}"))
        for r in range(REQUESTERS)
    ]
    approvers = [
        Kube(api_client(cluster.kubeconfig, as_user=a, as_groups=(settings.approver_group,)))
        for a in APPROVERS
    ]
    started = time.monotonic()
    with ThreadPoolExecutor(SETUP_THREADS) as pool:
        for future in [
            pool.submit(file_and_approve, i, requesters, approvers, datasets, now.date())
            for i in range(n)
        ]:
            future.result()
    say(f"setup done in {time.monotonic() - started:.1f}s")
    return Cluster(cluster, settings, admin_api, admin, controller_kubeconfig)


def dev_settings(cluster: DevCluster) -> Settings:
    """Settings for the dev platform: its kubeconfig and its S3 server (what `tre dev env`
    exports), never the audit signing key."""
    s3 = cluster.s3()
    return Settings(
        kubeconfig=cluster.kubeconfig,
        s3_endpoint_url=s3.url,
        s3_region=s3.region,
        s3_access_key_id=SecretStr(s3.access_key),
        s3_secret_access_key=SecretStr(s3.secret_key),
    )


# --- A and B: the controller ---------------------------------------------------------------------


@dataclass
class ControllerResult:
    provision: Window
    passes: int
    applied: int
    status_writes: int
    client_sent: Counter[str]
    resyncs: list[Window]
    resync_applied: int
    objects: list[Manifest]  # what kubectl will apply: the same objects, in our write order
    plan_order: list[Manifest]  # the same objects in plan order (the quota before the claims)
    statuses: list[Manifest]  # the statuses the controller wrote, for --subresource=status


def run_controller_side(c: Cluster, n: int, resyncs: int, workers: int | None) -> ControllerResult:
    settings = c.settings
    kube = CountingKube(api_client(c.controller_kubeconfig))
    pass_kwargs: dict[str, Any] = {} if workers is None else {"workers": workers}
    windows: list[Window] = []
    passes = applied = status_writes = 0
    say(f"A: run_pass as {settings.controller_user} until {n} workspaces are Ready")
    with timed(c.dev, c.admin_api, windows):
        while passes < MAX_PASSES:
            report = run_pass(kube, settings, dt.datetime.now(dt.UTC), **pass_kwargs)
            passes += 1
            applied += sum(len(r.applied) for r in report.results)
            status_writes += sum(r.status_writes for r in report.results)
            ready = sum(r.phase is WorkspacePhase.READY for r in report.results)
            if report.errors:
                say(f"  pass {passes}: {len(report.errors)} error(s), e.g. {report.errors}")
            if ready == n and not report.errors:
                break
    sent = Counter(kube.sent)
    live = c.admin.list(WORKSPACES)
    phases = Counter((w.get("status") or {}).get("phase") for w in live)
    if phases.get(WorkspacePhase.READY.value) != n:
        raise SystemExit(f"benchmark failed: workspaces by phase after {passes} passes: {phases}")
    say(f"A: {n} Ready in {windows[0].seconds:.2f}s ({passes} pass(es), {applied} applies)")
    # kube-controller-manager binds the claims on its own schedule (a periodic sync, not only
    # events), so a quiet spell alone does not mean it is done: wait for every binding, so
    # that its writes cannot land in a resync's window.
    wait_until_bound(c.admin)

    resync_windows: list[Window] = []
    resync_applied = 0
    for r in range(resyncs):
        with timed(c.dev, c.admin_api, resync_windows):
            report = run_pass(kube, settings, dt.datetime.now(dt.UTC), **pass_kwargs)
        resync_applied += sum(len(x.applied) + x.status_writes for x in report.results)
        w = resync_windows[-1]
        say(f"B{r + 1}: unchanged resync {w.seconds:.2f}s, {w.delta.writes()} write request(s)")

    objects: list[Manifest] = []
    plan_order: list[Manifest] = []
    statuses: list[Manifest] = []
    for obj in sorted(live, key=lambda o: o["metadata"]["name"]):
        workspace = Workspace.from_object(obj)
        plan = plan_workspace(workspace, settings)
        # The order the controller creates them in (it defers a new quota past the claims).
        created = [
            c.manifest
            for c in object_changes(plan, {}, WorkspacePhase.READY, namespace_exists=False)
        ]
        objects += [*(m for m in created if m is not None), workspace.to_object()]
        plan_order += [*plan, workspace.to_object()]
        statuses.append(_status_only(obj))
    statuses = [_status_only(o) for o in c.admin.list(ACCESS_REQUESTS)] + statuses
    return ControllerResult(
        windows[0],
        passes,
        applied,
        status_writes,
        sent,
        resync_windows,
        resync_applied,
        objects,
        plan_order,
        statuses,
    )


def _status_only(obj: Manifest) -> Manifest:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"name": obj["metadata"]["name"]},
        "status": obj["status"],
    }


# --- C: kubectl ----------------------------------------------------------------------------------


@dataclass
class KubectlResult:
    objects: Window
    statuses: Window
    resync_objects: Window
    resync_statuses: Window
    version: str


def kubectl_command(c: Cluster, cache_dir: Path, *args: str) -> list[str]:
    return [
        str(pinned_binaries().kubectl),
        f"--kubeconfig={c.controller_kubeconfig}",
        f"--cache-dir={cache_dir}",
        *args,
    ]


def kubectl_apply(c: Cluster, cache_dir: Path, file: Path, *extra: str) -> None:
    command = kubectl_command(
        c,
        cache_dir,
        "apply",
        "--server-side",
        "--force-conflicts",  # as the controller: it takes back fields others changed
        "--field-manager=bench",
        *extra,
        "-f",
        str(file),
    )
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"kubectl failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    if "throttling" in done.stderr:
        say("  note: kubectl reported client-side throttling")


def write_manifests(path: Path, manifests: list[Manifest]) -> Path:
    path.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    return path


def run_kubectl_side(c: Cluster, work: Path, ours: ControllerResult) -> KubectlResult:
    cache_dir = work / "kubectl-cache"
    objects = write_manifests(work / "objects.yaml", ours.objects)
    statuses = write_manifests(work / "statuses.yaml", ours.statuses)
    # A kubectl user has discovery cached already; fill the cache outside the timed section.
    subprocess.run(kubectl_command(c, cache_dir, "api-resources"), capture_output=True, check=True)
    version = json.loads(
        subprocess.run(
            [str(pinned_binaries().kubectl), "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["clientVersion"]["gitVersion"]
    windows: list[Window] = []
    say(f"C: kubectl apply --server-side of {len(ours.objects)} objects (one invocation)")
    with timed(c.dev, c.admin_api, windows):
        kubectl_apply(c, cache_dir, objects)
    say(f"C: objects {windows[-1].seconds:.2f}s; statuses ({len(ours.statuses)})")
    with timed(c.dev, c.admin_api, windows):
        kubectl_apply(c, cache_dir, statuses, "--subresource=status")
    say(f"C: statuses {windows[-1].seconds:.2f}s; unchanged re-apply of both")
    with timed(c.dev, c.admin_api, windows):
        kubectl_apply(c, cache_dir, objects)
    with timed(c.dev, c.admin_api, windows):
        kubectl_apply(c, cache_dir, statuses, "--subresource=status")
    say(
        f"C: unchanged re-apply {windows[2].seconds:.2f}s + {windows[3].seconds:.2f}s, "
        f"{windows[2].delta.writes() + windows[3].delta.writes()} write request(s)"
    )
    objects_w, statuses_w, resync_objects_w, resync_statuses_w = windows
    return KubectlResult(objects_w, statuses_w, resync_objects_w, resync_statuses_w, version)


def run_kubectl_plan_order(c: Cluster, work: Path, ours: ControllerResult) -> Window:
    """One `kubectl apply --server-side` of the objects in plan order, as a user would apply
    the planner's output: the quota exists before the claims, which the quota admission
    plugin then charges one status write each."""
    cache_dir = work / "kubectl-cache-plan-order"
    objects = write_manifests(work / "objects-plan-order.yaml", ours.plan_order)
    subprocess.run(kubectl_command(c, cache_dir, "api-resources"), capture_output=True, check=True)
    windows: list[Window] = []
    say(f"D: kubectl apply --server-side of {len(ours.plan_order)} objects in plan order")
    with timed(c.dev, c.admin_api, windows):
        kubectl_apply(c, cache_dir, objects)
    say(f"D: {windows[0].seconds:.2f}s")
    return windows[0]


def run_kubectl_per_workspace(c: Cluster, work: Path, ours: ControllerResult) -> Window:
    """One `kubectl apply --server-side` per workspace, in sequence (a shell loop's cost)."""
    cache_dir = work / "kubectl-cache-per-workspace"
    subprocess.run(kubectl_command(c, cache_dir, "api-resources"), capture_output=True, check=True)
    files: list[Path] = []
    batch: list[Manifest] = []
    for manifest in ours.objects:
        batch.append(manifest)
        if manifest["kind"] == "Workspace":  # the last object of each workspace
            files.append(write_manifests(work / f"ws-{len(files):04d}.yaml", batch))
            batch = []
    windows: list[Window] = []
    say(f"C': {len(files)} kubectl invocations, one per workspace")
    with timed(c.dev, c.admin_api, windows):
        for file in files:
            kubectl_apply(c, cache_dir, file)
    say(f"C': {windows[0].seconds:.2f}s")
    return windows[0]


# --- report --------------------------------------------------------------------------------------


def machine_facts() -> dict[str, str]:
    cpu = "unknown"
    with Path("/proc/cpuinfo").open() as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with Path("/proc/meminfo").open() as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kubernetes python client": kubernetes.__version__,
        "control plane": f"kube-apiserver, kube-controller-manager {K8S_VERSION}, etcd "
        "(provisioner/devcluster, all on 127.0.0.1)",
    }


def _per(n: int, count: float) -> str:
    return f"{count / n:.1f}"


def _verbs(delta: Metrics) -> str:
    verbs = delta.by_verb()
    return ", ".join(f"{v} {verbs[v]}" for v in (*READ_VERBS, *WRITE_VERBS) if verbs[v]) or "none"


def _writes_detail(delta: Metrics) -> str:
    rows = [
        f"{verb} {resource}{'/' + sub if sub else ''} {n}"
        for (verb, resource, sub), n in sorted(delta.counted().items())
        if verb in WRITE_VERBS
    ]
    return ", ".join(rows) or "none"


def _ratio(ours: ControllerResult, kubectl: KubectlResult) -> float:
    """kubectl's first provisioning (the objects alone) over ours."""
    return kubectl.objects.seconds / ours.provision.seconds


def render(
    n: int,
    rounds: list[tuple[ControllerResult, KubectlResult]],
    plan_order: Window | None,
    per_workspace: Window | None,
    command: str,
    workers: int | None,
) -> str:
    ratios = sorted(_ratio(*pair) for pair in rounds)
    ours, kubectl = next(pair for pair in rounds if _ratio(*pair) == ratios[len(ratios) // 2])
    a = ours.provision
    resync = statistics.median(w.seconds for w in ours.resyncs)
    resync_writes = max(w.delta.writes() for w in ours.resyncs)
    resync_etcd = max(w.delta.etcd_writes() for w in ours.resyncs)
    k_first = kubectl.objects.seconds
    k_all = k_first + kubectl.statuses.seconds
    k_resync = kubectl.resync_objects.seconds + kubectl.resync_statuses.seconds
    k_first_delta = kubectl.objects.delta
    k_all_reads = k_first_delta.reads() + kubectl.statuses.delta.reads()
    k_all_writes = k_first_delta.writes() + kubectl.statuses.delta.writes()
    k_resync_writes = kubectl.resync_objects.delta.writes() + kubectl.resync_statuses.delta.writes()
    k_resync_etcd = (
        kubectl.resync_objects.delta.etcd_writes() + kubectl.resync_statuses.delta.etcd_writes()
    )
    n_objects = len(ours.objects)
    n_statuses = len(ours.statuses)
    speedup_objects = k_first / a.seconds
    speedup_all = k_all / a.seconds

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    k_cpu = _busy(kubectl.objects) + _busy(kubectl.statuses)
    k_idle = kubectl.objects.cpu.get(IDLE, 0) + kubectl.statuses.cpu.get(IDLE, 0)
    lines = [
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {n} workspaces, "
        f"{n_objects} objects ({n_objects / n if n else 0:.0f} per workspace, the Workspace "
        f"included) and {n_statuses} statuses; `run_pass` with "
        f"{workers if workers is not None else DEFAULT_WORKERS} workers.",
        "",
        f"Reproduce: `{command}`",
        "",
        f"{len(rounds)} round(s), each side on a fresh cluster, in alternation; first "
        "provisioning, ours / kubectl's objects: "
        + "; ".join(
            f"{o.provision.seconds:.2f} s / {k.objects.seconds:.2f} s = {_ratio(o, k):.2f}x"
            for o, k in rounds
        )
        + f". The tables below are the round with the median ratio ({speedup_objects:.2f}x).",
        "",
        "| | ours: `run_pass` | kubectl `apply --server-side` | kubectl / ours |",
        "|---|---:|---:|---:|",
        f"| first provisioning (s), kubectl applying the objects only, 1 invocation "
        f"| {a.seconds:.2f} | {k_first:.2f} | {speedup_objects:.2f}x |",
        f"| first provisioning (s), kubectl applying the same objects and statuses, "
        f"2 invocations | {a.seconds:.2f} | {k_all:.2f} | {speedup_all:.2f}x |",
        f"| ... machine CPU seconds busy / idle meanwhile "
        f"| {_busy(a):.1f} / {a.cpu.get(IDLE, 0):.1f} "
        f"| {k_cpu:.1f} / {k_idle:.1f} | |",
        f"| API requests per workspace, all (reads / writes) "
        f"| {_per(n, a.delta.reads())} / {_per(n, a.delta.writes())} "
        f"| {_per(n, k_all_reads)} / {_per(n, k_all_writes)} | |",
        f"| ... of which the client under test sent "
        f"| {_per(n, a.delta.client())} "
        f"| {_per(n, k_first_delta.client() + kubectl.statuses.delta.client())} | |",
        f"| unchanged resync (s) | {resync:.2f} (median of {len(ours.resyncs)}) "
        f"| {k_resync:.2f} | {k_resync / resync:.1f}x |",
        f"| unchanged resync: write requests | {resync_writes} | {k_resync_writes} | |",
        f"| unchanged resync: etcd writes | {resync_etcd} | {k_resync_etcd} | |",
    ]
    if plan_order is not None:
        lines.append(
            f"| first provisioning (s), kubectl applying the objects in plan order (the quota "
            f"before the claims), 1 invocation | {a.seconds:.2f} | {plan_order.seconds:.2f} "
            f"| {plan_order.seconds / a.seconds:.2f}x |"
        )
    if per_workspace is not None:
        lines.append(
            f"| first provisioning, kubectl once per workspace (s) | | "
            f"{per_workspace.seconds:.2f} ({n} invocations) "
            f"| {per_workspace.seconds / a.seconds:.2f}x |"
        )
    lines += [
        "",
        f"Targets: at least 2x faster than kubectl at first provisioning: "
        f"{mark(speedup_objects >= 2)} (median {speedup_objects:.2f}x against kubectl's "
        f"objects alone, lowest round {ratios[0]:.2f}x; {speedup_all:.2f}x against the same "
        f"writes); unchanged resync of {n} "
        f"workspaces under 2 s: {mark(resync < 2)} ({resync:.2f} s); zero writes in it: "
        f"{mark(resync_writes == 0)} ({resync_writes}).",
        "",
        "Requests the apiserver counted in each timed section (apiserver_request_total, "
        "without the control plane's own leases, events and endpoints, and without "
        "non-resource paths):",
        "",
        "| section | wall (s) | CPU seconds by process | requests by verb "
        "| write requests by resource | etcd writes |",
        "|---|---:|---|---|---|---|",
        f"| A ours, first provisioning ({ours.passes} pass(es)) | {a.seconds:.2f} | {_cpu(a)} "
        f"| {_verbs(a.delta)} | {_writes_detail(a.delta)} | {_etcd_detail(a.delta)} |",
    ]
    for i, w in enumerate(ours.resyncs):
        lines.append(
            f"| B ours, unchanged resync {i + 1} | {w.seconds:.2f} | {_cpu(w)} | {_verbs(w.delta)} "
            f"| {_writes_detail(w.delta)} | {_etcd_detail(w.delta)} |"
        )
    for label, w in (
        ("C kubectl, objects", kubectl.objects),
        ("C kubectl, statuses", kubectl.statuses),
        ("C kubectl, unchanged objects", kubectl.resync_objects),
        ("C kubectl, unchanged statuses", kubectl.resync_statuses),
    ):
        lines.append(
            f"| {label} | {w.seconds:.2f} | {_cpu(w)} | {_verbs(w.delta)} "
            f"| {_writes_detail(w.delta)} "
            f"| {_etcd_detail(w.delta)} |"
        )
    if plan_order is not None:
        lines.append(
            f"| D kubectl, objects in plan order | {plan_order.seconds:.2f} | {_cpu(plan_order)} "
            f"| {_verbs(plan_order.delta)} | {_writes_detail(plan_order.delta)} "
            f"| {_etcd_detail(plan_order.delta)} |"
        )
    if per_workspace is not None:
        lines.append(
            f"| C' kubectl, once per workspace | {per_workspace.seconds:.2f} "
            f"| {_cpu(per_workspace)} "
            f"| {_verbs(per_workspace.delta)} | {_writes_detail(per_workspace.delta)} "
            f"| {_etcd_detail(per_workspace.delta)} |"
        )
    sent = ours.client_sent
    lines += [
        "",
        f"Cross-check, counted in the controller's own client during A: "
        f"{', '.join(f'{m} {sent[m]}' for m in sorted(sent))} "
        f"({sum(sent.values())} requests; {ours.applied} applies and {ours.status_writes} "
        f"status patches reported by run_pass). Requests dispatched for the controller's "
        f"flow schema during A: {_flows(a.delta)}; during kubectl's objects: "
        f"{_flows(k_first_delta)}.",
        "",
        "Machine and versions:",
        "",
        *(f"- {k}: {v}" for k, v in machine_facts().items()),
        f"- kubectl: {kubectl.version} (built from the same Go module as the apiserver)",
    ]
    return "\n".join(lines)


def render_controller_only(n: int, ours: ControllerResult) -> str:
    lines = [
        f"{n} workspaces: first provisioning {ours.provision.seconds:.2f}s in {ours.passes} "
        f"pass(es); CPU {_cpu(ours.provision)}; {_verbs(ours.provision.delta)}; client "
        f"requests {ours.provision.delta.client()}",
        *(
            f"unchanged resync {i + 1}: {w.seconds:.2f}s, {w.delta.writes()} writes "
            f"({_writes_detail(w.delta)}); CPU {_cpu(w)}"
            for i, w in enumerate(ours.resyncs)
        ),
    ]
    return "\n".join(lines)


def _busy(window: Window) -> float:
    """Busy CPU seconds of the whole machine in the window (ours, control plane, others)."""
    return sum(v for k, v in window.cpu.items() if k not in (IDLE, STEAL))


def _cpu(window: Window) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in window.cpu.items() if v >= 0.05) or "none"


def _etcd_detail(delta: Metrics) -> str:
    rows = [
        f"{op} {resource} {n}"
        for (op, resource), n in sorted(delta.etcd.items())
        if op in ("create", "update", "delete") and resource not in BACKGROUND_RESOURCES
    ]
    return ", ".join(rows) or "none"


def _flows(delta: Metrics) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(delta.flows.items()) if v) or "none"


DOC_INTRO = """# Performance

How fast the controller turns approved access requests into workspaces, measured by hand with
`benchmarks/provision_workspaces.py` (never timed in the test suite: a shared CI machine is too
noisy for timing assertions).

What is measured (issue 3): N approved workspaces are provisioned from nothing on the local
control plane (a fresh etcd + kube-apiserver + kube-controller-manager, `tre dev up`), by one
controller pass after another (`run_pass`, as the controller's own identity) until every
workspace is Ready; then the same workspaces are resynced unchanged. The comparison is
`kubectl apply --server-side` of the very same objects (what `plan_workspace` produced for each
workspace, plus the Workspace objects), by the same identity, on a second fresh cluster with the
same setup, with kubectl built from the same Go module as the apiserver. The controller also
writes 2N statuses (AccessRequest, Workspace) and lists everything first; kubectl's second
invocation applies the same statuses through the status subresource, so the table gives the
ratio against kubectl's objects alone (the harder comparison) and against the same writes.
Request counts come from the apiserver's own `/metrics`, sampled before and after each timed
section once the cluster has settled. The setup (datasets, requests filed and approved by
impersonated users) is not timed.

Targets: first provisioning at least 2x faster than kubectl; an unchanged resync of 200
workspaces in under 2 seconds, with zero write requests.
"""


def write_docs(section: str) -> None:
    update_docs_section(SECTION_START, SECTION_END, "## Provisioning workspaces", section)


def update_docs_section(start: str, end: str, title: str, section: str) -> None:
    """Replace the block between the markers `start` and `end` in docs/performance.md (or
    append it), so each benchmark rewrites only its own section."""
    block = f"{start}\n{title}\n\n{section}\n{end}\n"
    text = DOCS.read_text() if DOCS.exists() else DOC_INTRO
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text)
    say(f"updated {DOCS.relative_to(ROOT)}")


# --- main ----------------------------------------------------------------------------------------


@contextmanager
def fresh_cluster(
    work: Path, name: str, n: int, settings_for: Callable[[DevCluster], Settings]
) -> Iterator[Cluster]:
    say(f"cluster {name}: starting a fresh control plane")
    state = work / f"cluster-{name}"
    try:
        yield prepare_cluster(state, settings_for, n)
    finally:
        say(f"cluster {name}: stopping")
        DevCluster(state).down(lambda m: say(f"  {m}"), purge=True)


def machine_busy(seconds: float = 3.0) -> float:
    """Fraction of the machine's CPU in use over `seconds`, before we start anything."""

    def sample() -> tuple[int, int]:
        cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        return sum(cpu), cpu[3] + cpu[4]

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspaces", type=int, default=200, help="N (default 200)")
    parser.add_argument("--resyncs", type=int, default=3, help="unchanged resyncs to time")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"run_pass(workers=...) (default: run_pass's own, {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--no-per-workspace",
        action="store_true",
        help="skip the third cluster with one kubectl invocation per workspace",
    )
    parser.add_argument(
        "--no-plan-order",
        action="store_true",
        help="skip the cluster where kubectl applies the objects in plan order",
    )
    parser.add_argument(
        "--only-controller",
        action="store_true",
        help="measure A and B only and print them (for profiling the controller; no kubectl)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="run A (ours) and B (kubectl), each on a fresh cluster, this many times in "
        "alternation; the report lists every round and details the one with the median ratio "
        "(default 3)",
    )
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS.name}")
    args = parser.parse_args()
    n = args.workspaces
    command = ".venv/bin/python benchmarks/provision_workspaces.py " + " ".join(sys.argv[1:])

    settings_for = dev_settings
    busy = machine_busy()
    if busy > 0.2:
        say(
            f"warning: the machine is already {busy:.0%} busy; timings will be noisy (the "
            "'other processes' CPU in the report shows how much)"
        )
    with tempfile.TemporaryDirectory(prefix="tre-bench-") as tmp:
        work = Path(tmp)
        rounds: list[tuple[ControllerResult, KubectlResult]] = []
        for r in range(1, args.rounds + 1):
            say(f"round {r} of {args.rounds}")
            with fresh_cluster(work, f"A{r}", n, settings_for) as c:
                ours = run_controller_side(c, n, args.resyncs, args.workers)
            if args.only_controller:
                print(render_controller_only(n, ours))
                continue
            with fresh_cluster(work, f"B{r}", n, settings_for) as c:
                kubectl = run_kubectl_side(c, work, ours)
            rounds.append((ours, kubectl))
            say(f"round {r}: kubectl / ours = {_ratio(ours, kubectl):.2f}x")
        if args.only_controller:
            return
        # The tables detail the round with the median ratio; every round is listed.
        ours, kubectl = sorted(rounds, key=lambda pair: _ratio(*pair))[len(rounds) // 2]
        plan_order = None
        if not args.no_plan_order:
            with fresh_cluster(work, "D", n, settings_for) as c:
                plan_order = run_kubectl_plan_order(c, work, ours)
        per_workspace = None
        if not args.no_per_workspace:
            with fresh_cluster(work, "C", n, settings_for) as c:
                per_workspace = run_kubectl_per_workspace(c, work, ours)
    section = render(n, rounds, plan_order, per_workspace, command, args.workers)
    print(section)
    if args.write_docs:
        write_docs(section)


if __name__ == "__main__":
    main()
