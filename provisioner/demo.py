"""`make demo`: the platform's main job, end to end, on the local platform.

1. bring up the local platform (control plane + S3) and install CRDs, policies and RBAC;
2. put a small synthetic dataset into S3, register it as the data steward, and let the
   controller (its own identity and S3 client) verify it and record its manifest;
3. file an access request as the project lead;
4. approve it as two approvers (the dataset is `sensitive`, so one is not enough);
5. run the controller until the workspace is Ready, and show the workspace and its objects;
6. start JupyterHub (`tre dev up` does, after the install it needs), where the project's
   members sign in and start the project's named server, and the airlock beside it;
7. take a result out through the airlock: a member submits it with `tre export submit` and
   a hub token (as from the notebook's terminal), two output checkers review it, the
   controller approves it from their reviews, the lead releases and downloads it, and the
   downloaded bytes are compared with the submitted ones.

Every step runs the real `tre` command, printed before it runs, with the identity it acts as:
people through `--as` (Kubernetes impersonation), the controller with a token of its own
ServiceAccount, as it has in a cluster. The platform keeps running afterwards.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
import random
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from provisioner.controller.datasets import verify_datasets
from provisioner.devcluster.binaries import pinned_binaries
from provisioner.devcluster.cluster import DevCluster, default_state_dir
from provisioner.devcluster.hub import DEV_OUTPUT_CHECKERS, DevHub, sign_in
from provisioner.devcluster.node_services import workspace_settings
from provisioner.errors import TreError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client, write_service_account_kubeconfig
from provisioner.kube.resources import ACCESS_REQUESTS, DATASETS, EXPORT_REQUESTS
from provisioner.models.resources import Dataset
from provisioner.models.settings import Settings
from provisioner.planning.names import AIRLOCK_PREFIX
from provisioner.storage.s3 import ensure_bucket, s3_client

TRE = str(Path(sys.executable).with_name("tre"))
BUCKET = "demo-datasets"
PREFIX = "cardio-cohort-2026/"
PROJECT = "heart-failure-ml"


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def tre(*args: str, env: dict[str, str] | None = None) -> None:
    """Run `tre`, printing the command and then each line it writes as it writes it: its
    progress (standard error) and its result (standard output) on one stream, so they appear
    in the order they happen. A failure ends the demo."""
    # Tokens are not shown: a demo's output ends up in logs and screenshots.
    prefix = "".join(
        f"{k}={'<hidden>' if 'TOKEN' in k else shlex.quote(v)} " for k, v in (env or {}).items()
    )
    print(f"$ {prefix}tre {shlex.join(args)}", flush=True)
    with subprocess.Popen(
        [TRE, *args],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print("  " + line.rstrip("\n"), flush=True)
    if process.returncode != 0:
        raise SystemExit(f"demo step failed (exit {process.returncode}): tre {shlex.join(args)}")


def synthetic_admissions(seed: int, rows: int) -> bytes:
    """Fake, reproducible patient-like rows: nothing here is real data."""
    rng = random.Random(seed)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["pseudo_id", "age", "sex", "ejection_fraction", "nt_pro_bnp", "readmitted"])
    for i in range(rows):
        writer.writerow(
            [
                f"P{seed:02d}{i:05d}",
                rng.randint(40, 95),
                rng.choice("FM"),
                rng.randint(15, 70),
                rng.randint(50, 9000),
                rng.random() < 0.2,
            ]
        )
    return buf.getvalue().encode()


def main() -> None:
    cluster = DevCluster(default_state_dir())
    say("starting the local platform (etcd, kube-apiserver, controller-manager, S3)")
    cluster.up(lambda m: print(f"  {m}", flush=True))
    os.environ.update(cluster.env())
    settings = Settings()

    say("installing CRDs, admission policies and RBAC")
    tre("install")

    say(f"uploading a synthetic dataset to s3://{BUCKET}/{PREFIX}")
    s3 = s3_client(settings)
    ensure_bucket(s3, BUCKET, versioning=True)
    for site in range(3):
        key = f"{PREFIX}site-{site + 1}/admissions.csv"
        s3.put_object(Bucket=BUCKET, Key=key, Body=synthetic_admissions(site, 500))
        print(f"  put s3://{BUCKET}/{key}")

    # What exists already (the demo can run again on a running platform): asked quietly,
    # so a first run prints no "does not exist" error.
    admin = Kube(api_client(cluster.kubeconfig))
    say("the data steward registers it")
    if admin.get(DATASETS, "cardio-cohort") is not None:
        print("  dataset cardio-cohort is registered already", flush=True)
    else:
        tre(
            "--as",
            "dana.steward",
            "--as-group",
            "tre:stewards",
            "dataset",
            "register",
            "cardio-cohort",
            "--title",
            "Heart-failure admissions 2026 (synthetic)",
            "--steward",
            "dana.steward",
            "--classification",
            "sensitive",
            "--bucket",
            BUCKET,
            "--prefix",
            PREFIX,
        )

    controller_kubeconfig = write_service_account_kubeconfig(
        admin,
        cluster.kubeconfig,
        settings.controller_user,
        cluster.state_dir / "tre-controller.kubeconfig",
    )
    controller = Kube(api_client(controller_kubeconfig))
    say(
        "the controller verifies it: lists the data with its own S3 client and records the "
        "manifest that approvals pin (what its loop does on every pass)"
    )
    datasets = [Dataset.from_object(o) for o in controller.list(DATASETS)]
    for done in verify_datasets(controller, s3, datasets, dt.datetime.now(dt.UTC), settings):
        if not done.ok:
            raise SystemExit(f"demo step failed: dataset {done.name}: {done.error}")
        print(f"  dataset {done.name}: manifest sha256 {done.sha256}", flush=True)

    say("the project lead files an access request")
    today = dt.date.today()
    request = {
        "project": PROJECT,
        "lead": "lena.lead",
        "members": ["lena.lead", "rik.researcher"],
        "datasets": ["cardio-cohort"],
        "computeTier": "medium",
        "purpose": "Predict 30-day readmission after heart-failure admission.",
        "startDate": today.isoformat(),
        "endDate": (today + dt.timedelta(days=180)).isoformat(),
    }
    name = f"{PROJECT}-demo"
    if admin.get(ACCESS_REQUESTS, name) is not None:
        print(f"  request {name} is filed and decided already", flush=True)
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(request, f)
        tre("--as", "lena.lead", "request", "submit", "-f", f.name, "--name", name)
        Path(f.name).unlink()

        say("two approvers decide (sensitive data needs four eyes)")
        for approver, comment in (
            ("arjen.approver", "DPIA on file; purpose matches consent"),
            ("bea.approver", "second review ok"),
        ):
            tre(
                "--as",
                approver,
                "--as-group",
                "tre:approvers",
                "request",
                "approve",
                name,
                "-m",
                comment,
            )

    say("the controller provisions the workspace, as its own ServiceAccount (a TokenRequest token)")
    # Only the controller process gets the audit signing key (a Secret of its pod in a cluster).
    tre(
        "controller",
        "run",
        "--once",
        env={
            "KUBECONFIG": str(controller_kubeconfig),
            "TRE_AUDIT_SIGNING_KEY_FILE": str(cluster.audit_signing_key_file),
        },
    )
    tre("workspace", "list")
    tre("request", "list")

    _show_objects()
    tre("audit", "verify")

    say("starting JupyterHub, as the hub's ServiceAccount, with a development sign-in")
    tre("dev", "up")

    export_through_the_airlock(cluster, controller_kubeconfig)
    _done(cluster)


def _show_objects() -> None:
    say(f"objects in namespace tre-{PROJECT}")
    subprocess.run(
        [
            str(pinned_binaries().kubectl),
            "get",
            "networkpolicies,resourcequotas,limitranges,serviceaccounts,"
            "persistentvolumeclaims,rolebindings",
            "-n",
            f"tre-{PROJECT}",
        ],
        check=False,
    )
    subprocess.run(
        [
            str(pinned_binaries().kubectl),
            "get",
            "persistentvolumes",
            "-l",
            f"tre.ucloud.org/project={PROJECT}",
        ],
        check=False,
    )


def export_through_the_airlock(cluster: DevCluster, controller_kubeconfig: Path) -> None:
    """Step 7: a result leaves through the airlock (module docstring)."""
    hub = DevHub(cluster)
    endpoints = hub.endpoints()
    if endpoints is None:
        raise SystemExit("demo step failed: the hub is not running")
    password = hub.password_file.read_text().strip()
    airlock = f"{endpoints.probe_url}{AIRLOCK_PREFIX}"

    def as_person(who: str) -> dict[str, str]:
        # A hub API token of theirs, as a notebook has one (JUPYTERHUB_API_TOKEN).
        _, token = sign_in(endpoints.probe_url, who, password, "demo")
        return {"JUPYTERHUB_API_TOKEN": token, "TRE_AIRLOCK_URL": airlock}

    say("rik.researcher submits a result for export (as from the notebook's terminal)")
    # Stands in for the project storage mounted at /project in the notebook.
    storage = Path(tempfile.mkdtemp(prefix="tre-demo-project-"))
    result = storage / "results" / "readmissions_by_age.csv"
    result.parent.mkdir()
    result.write_bytes(readmissions_by_age())
    (storage / "results" / "method.md").write_text(
        "Counts of 30-day readmissions by age band over the three sites; no cell below 10.\n"
    )
    print(f"  {result.relative_to(storage)}: {result.stat().st_size} bytes", flush=True)
    tre(
        "export", "submit", "results/readmissions_by_age.csv",
        "--supporting", "results/method.md",
        "--description", "30-day readmissions by age band",
        "--context", "Aggregate counts over 1500 synthetic admissions; every cell is 10 or more.",
        "--project", PROJECT, "--root", str(storage),
        env=as_person("rik.researcher"),
    )  # fmt: skip
    name = _newest_export(cluster)

    say("two output checkers review it, independently (neither sees the other's vote)")
    for checker in DEV_OUTPUT_CHECKERS:
        tre(
            "export", "review", name, "--vote", "*=approve", "-m", "aggregate, no small cells",
            env=as_person(checker),
        )  # fmt: skip

    say("the controller decides from the reviews: two independent approvals make it Approved")
    tre(
        "controller",
        "run",
        "--once",
        env={
            "KUBECONFIG": str(controller_kubeconfig),
            "TRE_AUDIT_SIGNING_KEY_FILE": str(cluster.audit_signing_key_file),
        },
    )

    say("lena.lead, the project's lead, releases it and downloads the file")
    lead = as_person("lena.lead")
    tre("export", "release", name, env=lead)
    downloaded = storage / "downloaded.csv"
    tre(
        "export", "download", name, "results/readmissions_by_age.csv",
        "--out", str(downloaded), env=lead,
    )  # fmt: skip
    same = downloaded.read_bytes() == result.read_bytes()
    digest = hashlib.sha256(downloaded.read_bytes()).hexdigest()
    print(f"  downloaded bytes equal the submitted ones: {same} (sha256 {digest})", flush=True)
    if not same:
        raise SystemExit("demo step failed: the released file differs from the submitted one")
    tre("audit", "verify")


def readmissions_by_age() -> bytes:
    """An aggregate of the synthetic dataset: counts per age band, none below 10."""
    bands = {"<50": 0, "50-69": 0, "70+": 0}
    for site in range(3):
        rows = csv.DictReader(io.StringIO(synthetic_admissions(site, 500).decode()))
        for row in rows:
            age = int(row["age"])
            band = "<50" if age < 50 else "50-69" if age < 70 else "70+"
            bands[band] += row["readmitted"] == "True"
    lines = ["age_band,readmitted_30d"] + [f"{band},{count}" for band, count in bands.items()]
    return ("\n".join(lines) + "\n").encode()


def _newest_export(cluster: DevCluster) -> str:
    """NAMESPACE/NAME of the newest export of the demo project."""
    admin = Kube(api_client(cluster.kubeconfig))
    namespace = f"tre-{PROJECT}"
    found = admin.list(EXPORT_REQUESTS, namespace=namespace)
    newest = max(found, key=lambda o: o["metadata"]["creationTimestamp"] + o["metadata"]["name"])
    return f"{namespace}/{newest['metadata']['name']}"


def _done(cluster: DevCluster) -> None:
    say("done: the platform keeps running")
    custom = "TRE_DEV_DIR" in os.environ
    where = f" --state-dir {shlex.quote(str(cluster.state_dir))}" if custom else ""
    hub = DevHub(cluster)
    endpoints = hub.endpoints()
    if endpoints is not None:
        print(f"  the hub:  {endpoints.probe_url}/  sign in as rik.researcher (a member) with the")
        print(f"            password in {hub.password_file}, and start the server {PROJECT}")
        if workspace_settings(cluster):
            print("            (JupyterLab opens with /data/cardio-cohort read-only and")
            print("            /project writable; nothing else is reachable from it)")
        else:
            print("            (its pod is created in the project's namespace and stays Pending:")
            print("            this platform has no node; as root, `tre dev up --node` adds one)")
    print(f'  use it:   eval "$({TRE} dev env{where})"   then e.g.  {TRE} workspace show {PROJECT}')
    print(f"  stop it:  {TRE} dev down{where}" if custom else "  stop it:  make down")


if __name__ == "__main__":
    try:
        main()
    except TreError as exc:
        raise SystemExit(f"demo failed: {exc}") from exc
