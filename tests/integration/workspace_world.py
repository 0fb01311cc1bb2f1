"""A small world of people, datasets and requests for the workspace tests, driven through the
real `tre` CLI (typer's CliRunner) and the real controller code, against the real platform."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from typer.testing import CliRunner, Result

from provisioner.audit.log import AuditLog, ensure_audit_bucket, open_audit_log
from provisioner.audit.signing import AuditSigner
from provisioner.cli.app import app
from provisioner.controller.datasets import DatasetVerification, verify_datasets
from provisioner.controller.loop import KeyedAuditor
from provisioner.controller.reconcile import ReconcileResult, read_snapshot, reconcile_project
from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import RefusedError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client, write_service_account_kubeconfig
from provisioner.kube.resources import ACCESS_REQUESTS, DATASETS, WORKSPACES
from provisioner.models.resources import Dataset
from provisioner.models.settings import Settings
from provisioner.planning.names import ANNOTATION_USER, hub_user
from provisioner.planning.notebook_pods import GATE_CONTAINER, GATE_UID
from provisioner.storage.s3 import ensure_bucket, s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

APPROVERS = "tre:approvers"
STEWARDS = "tre:stewards"


_DATA_BUCKETS: dict[str, str] = {}


# What the API server says while its caches catch up with a workspace that just became Ready
# (both fail closed): the admission parameters ("no params found") and the quota controller's
# count of a resource the quota just started to limit (ExportRequests, F20).
CATCHING_UP = ("no params found", "status unknown for quota")


def catching_up(message: str) -> bool:
    return any(sign in message for sign in CATCHING_UP)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@dataclass
class World:
    settings: Settings
    kubeconfig: Path
    tmp: Path
    runner: CliRunner = field(default_factory=CliRunner)

    def __post_init__(self) -> None:
        self.admin = Kube(api_client(self.kubeconfig))
        # The controller acts with a token of its own ServiceAccount, as it does in a cluster
        # (no impersonation), so these tests prove that `tre install` gives it what it needs.
        self.controller = Kube(
            api_client(
                write_service_account_kubeconfig(
                    self.admin,
                    self.kubeconfig,
                    self.settings.controller_user,
                    self.tmp / "controller.kubeconfig",
                )
            )
        )
        # The hub spawns notebooks with its ServiceAccount; one of the cluster's own controllers
        # (the namespace controller, which may only delete there) plays drift by deleting.
        self.hub = Kube(api_client(self.kubeconfig, as_user=hub_user(self.settings)))
        self.cluster_itself = Kube(
            api_client(
                self.kubeconfig, as_user="system:serviceaccount:kube-system:namespace-controller"
            )
        )
        self.s3: S3Client = s3_client(self.settings)
        ensure_audit_bucket(
            self.s3, self.settings.audit_bucket, retention_days=self.settings.audit_retention_days
        )
        # The controller's audit key, made by `tre dev up` in the platform's state directory
        # (the kubeconfig lives there too); only the controller's log gets it.
        self.signer = AuditSigner.from_file(
            DevCluster(self.kubeconfig.parent).audit_signing_key_file
        )
        self.audit: AuditLog = open_audit_log(self.settings, self.s3, signer=self.signer)
        self.keyed_audit = KeyedAuditor(self.audit)
        # One data bucket per S3 server for the whole session (datasets live under their own
        # prefixes): SeaweedFS gives every bucket volumes of its own, and a bucket per test
        # would run the local server out of volumes.
        self.bucket = _DATA_BUCKETS.setdefault(str(self.settings.s3_endpoint_url), unique("data"))
        ensure_bucket(self.s3, self.bucket, versioning=True)

    # --- the CLI, as a person ----------------------------------------------------------------

    def tre(self, *args: str, user: str | None = None, group: str | None = None) -> Result:
        prefix = [*(["--as", user] if user else []), *(["--as-group", group] if group else [])]
        return self.runner.invoke(app, [*prefix, *args])

    def tre_json(self, *args: str, **who: Any) -> Any:
        result = self.tre("-o", "json", *args, **who)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    # --- data, requests, decisions -------------------------------------------------------------

    def dataset(self, classification: str = "internal", files: int = 2) -> str:
        name = unique("ds")
        for i in range(files):
            self.s3.put_object(Bucket=self.bucket, Key=f"{name}/part-{i}.csv", Body=b"a,b\n1,2\n")
        result = self.tre(
            "dataset",
            "register",
            name,
            "--title",
            f"Test data {name}",
            "--steward",
            "sam",
            "--classification",
            classification,
            "--bucket",
            self.bucket,
            "--prefix",
            f"{name}/",
            user="sam",
            group=STEWARDS,
        )
        assert result.exit_code == 0, result.output
        self.verify_datasets()
        return name

    def verify_datasets(self, now: dt.datetime | None = None) -> list[DatasetVerification]:
        """What the running controller does on its pass: record manifests of due datasets."""
        datasets = [Dataset.from_object(o) for o in self.controller.list(DATASETS)]
        done = verify_datasets(
            self.controller, self.s3, datasets, now or dt.datetime.now(dt.UTC), self.settings
        )
        assert all(v.ok for v in done), done
        return done

    def request_file(self, **fields: Any) -> Path:
        today = dt.date.today()
        body = {
            "project": unique("proj"),
            "lead": "lea",
            "members": ["lea", "ravi"],
            "datasets": [],
            "purpose": "A test of the workspace controller.",
            "startDate": today.isoformat(),
            "endDate": (today + dt.timedelta(days=90)).isoformat(),
            **fields,
        }
        path = self.tmp / f"{uuid.uuid4().hex}.yaml"
        path.write_text(yaml.safe_dump(body))
        return path

    def submit(self, by: str = "lea", **fields: Any) -> tuple[str, str]:
        """File a request as `by` (default lea, the default lead); returns (name, project)."""
        path = self.request_file(**fields)
        out = self.tre_json("request", "submit", "-f", str(path), user=by)
        return out["name"], out["project"]

    def approve(self, name: str, *approvers: str) -> None:
        for approver in approvers:
            result = self.tre(
                "request", "approve", name, "-m", "ok", user=approver, group=APPROVERS
            )
            assert result.exit_code == 0, result.output

    def approved_project(self, classification: str = "internal") -> tuple[str, str, str]:
        """(request, project, dataset) for a freshly approved request."""
        dataset = self.dataset(classification)
        name, project = self.submit(datasets=[dataset])
        self.approve(name, "ann", "bob")
        return name, project, dataset

    # --- the controller ------------------------------------------------------------------------

    def reconcile(
        self,
        project: str,
        now: dt.datetime | None = None,
        kube: Kube | None = None,
        settings: Settings | None = None,
    ) -> ReconcileResult:
        k = kube or self.controller
        return reconcile_project(
            k,
            settings or self.settings,
            project,
            read_snapshot(k),
            now or dt.datetime.now(dt.UTC),
            self.keyed_audit,
            self.keyed_audit.known(),
        )

    def workspace(self, project: str) -> dict[str, Any] | None:
        return self.admin.get(WORKSPACES, project)

    def request_object(self, name: str) -> dict[str, Any]:
        obj = self.admin.get(ACCESS_REQUESTS, name)
        assert obj is not None
        return obj

    def access_request_names(self) -> set[str]:
        return {o["metadata"]["name"] for o in self.admin.list(ACCESS_REQUESTS)}

    def dataset_names(self) -> set[str]:
        return {o["metadata"]["name"] for o in self.admin.list(DATASETS)}


RESTRICTED: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def notebook_pod(
    namespace: str, user: str, claims: list[str] | None = None, *, read_only: bool = True
) -> dict[str, Any]:
    """A pod as the hub starts it for `user`: restricted, tokenless, mounting `claims`
    (dataset claims read-only unless `read_only` is False), with the browser gate."""
    volumes = [
        {
            "name": f"v{i}",
            "persistentVolumeClaim": {
                "claimName": claim,
                **({"readOnly": True} if read_only and claim.startswith("ds-") else {}),
            },
        }
        for i, claim in enumerate(claims or [])
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"jupyter-{user}",
            "namespace": namespace,
            "labels": {"component": "singleuser-server"},
            "annotations": {ANNOTATION_USER: user},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "volumes": volumes,
            "containers": [
                {
                    "name": "notebook",
                    "image": "registry.invalid/notebook:1",
                    "securityContext": RESTRICTED,
                },
                # the browser gate, which admission wants beside the workspace's storage
                {
                    "name": GATE_CONTAINER,
                    "image": "registry.invalid/gate:1",
                    "securityContext": {
                        **RESTRICTED,
                        "runAsUser": GATE_UID,
                        "readOnlyRootFilesystem": True,
                    },
                },
            ],
        },
    }


def create_pod_when_admitted(
    kube: Kube, pod: dict[str, Any], *, dry_run: bool = False, timeout: float = 10.0
) -> Any:
    """Create a pod in a just-provisioned namespace.

    The API server reads the deny-all NetworkPolicy that admission requires from an informer
    cache, so for a moment after the controller created it a pod is still refused ("no params
    found"), and its RBAC authorizer learns the hub's new RoleBinding the same way. That is
    the platform failing closed; the hub sees the same and retries.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return kube.create(pod, dry_run=dry_run)
        except RefusedError as exc:
            # the RBAC authorizer's cache lags a new RoleBinding the same way
            lagging = "no params found" in str(exc) or 'cannot create resource "pods"' in str(exc)
            if not lagging or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
