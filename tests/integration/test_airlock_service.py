"""The airlock service end to end: a real hub (its OAuth and tokens), the real `tre airlock
serve` process behind the hub's proxy, the real API server (every change of an export made as
the person, by impersonation, and judged by the admission policies), the real S3 server,
reached with the airlock's own key (its buckets only: no dataset, no audit log).

Behaviours under test:
- a member submits two files with `tre export submit` and a hub-issued token; the bytes land
  in quarantine, the request in the project's namespace, filed in the member's name;
- an output checker sees the automated checks and opens a file (a POST; the view is recorded
  in the export's status first); the project's own people never see quarantined bytes;
- nothing is recorded by a GET: a signed-in browser's GET of a view or download URL is 405
  and a POST without the page's XSRF token 403, neither recorded (S17);
- reviews are hidden from each other until the decision; two checkers approve, the
  controller makes it Approved; a third vote is refused;
- only the project's lead releases; the lead downloads each released file through a
  short-lived link and gets the same bytes; the link stops working once it expires;
- a revoke removes the egress copies and records why; the link stops working;
- submit, every review, view, release, download and revoke reach the audit chain;
- bad input: a path out of project storage, a disallowed type, bytes that are not what was
  declared, an undeclared file: clear refusals, nothing filed or stored;
- a release interrupted after its manifest was written (the service killed) completes once
  when asked again;
- a file that is a byte copy of the workspace's data is flagged to the checkers by a service
  that reads no dataset, from the fingerprints the controller recorded (S14);
- a notebook's token (the real hub's server token, read from the pod KubeSpawner made for a
  named server) works for its own workspace only (S4): what the hub says of it carries
  `access:servers!server=<user>/<project>`; a checker's notebook token cannot list, show,
  view, review or revoke any export, of its own project or another; a member of two projects
  files, uploads and withdraws with project A's token in A, and cannot file in B, nor upload
  to or withdraw B's exports; on the hub's API the same token reaches no other server, no
  other user, no user list, makes no token and cannot start an OAuth sign-in.
- no one person can stall everyone (S10, F20): a member files an export of 16 files and opens
  16 connections that send a PUT's headers and never the body; beyond their few uploads at
  once the airlock answers 429 naming the limit, a checker's list and a lead's revoke in
  another project complete meanwhile and /health says ok; the silent uploads are cut, a
  trickling one is cut at the minimum rate, and then the member uploads normally; filing
  beyond the hourly limit is 429 with the wait, for that person only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from provisioner.airlock.desk import Desk
from provisioner.airlock.keys import ExportRef
from provisioner.airlock.release import ensure_airlock_buckets, read_manifest, release_export
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.hub import DEV_OUTPUT_CHECKERS, DevHub, HubEndpoints
from provisioner.devcluster.s3server import AirlockScope, airlock_credentials
from provisioner.kube.api import Kube
from provisioner.kube.resources import EXPORT_REQUESTS, RESOURCES, WORKSPACES
from provisioner.models.resources import ExportRequest, Workspace
from provisioner.models.settings import Settings
from provisioner.planning.names import AIRLOCK_PREFIX, namespace_name
from provisioner.storage.s3 import s3_client
from tests.integration.workspace_world import World, catching_up
from tests.jupyter_clients import sign_in

pytestmark = pytest.mark.integration
PODS = RESOURCES[("v1", "Pod")]
TRE = str(Path(sys.executable).with_name("tre"))
OLGA, OMAR = DEV_OUTPUT_CHECKERS
OTTO = "otto.checker"  # a third checker, for a vote after the decision
# Seconds a download link lives in this module's airlock: long enough to use it, short
# enough to see it expire.
LINK_SECONDS = 4
# This module's airlock cuts a silent upload after UPLOAD_IDLE seconds, one slower than
# UPLOAD_FLOOR bytes a second, and takes FILINGS exports an hour from one person.
UPLOAD_IDLE = 5
UPLOAD_FLOOR = 200_000
FILINGS = 15
TABLE = b"age_band,readmissions\n<50,12\n50-70,40\n>70,33\n"
NOTES = b"Model: logistic regression on 1500 synthetic admissions.\n"


@pytest.fixture(scope="module")
def hub(installed_platform: Settings, dev_platform: DevCluster) -> Iterator[HubEndpoints]:
    """The hub, its proxy and the airlock service, as `tre dev up` starts them."""
    # What `tre dev up` (and `tre install` with S3) makes before the airlock runs.
    ensure_airlock_buckets(s3_client(installed_platform), installed_platform)
    checkers = {installed_platform.output_checker_group: [OLGA, OMAR, OTTO]}
    given = {
        "TRE_AIRLOCK_LINK_EXPIRY_SECONDS": str(LINK_SECONDS),
        "TRE_AIRLOCK_UPLOAD_IDLE_SECONDS": str(UPLOAD_IDLE),
        "TRE_AIRLOCK_UPLOAD_MIN_BYTES_PER_SECOND": str(UPLOAD_FLOOR),
        "TRE_AIRLOCK_EXPORTS_PER_PERSON_PER_HOUR": str(FILINGS),
        "TRE_HUB_DEV_GROUPS": json.dumps(checkers),
    }
    saved = {key: os.environ.get(key) for key in given}
    os.environ.update(given)
    dev_hub = DevHub(dev_platform, "airlock-hub")
    try:
        yield dev_hub.up(installed_platform, lambda m: print(f"[hub] {m}"))
    finally:
        for proc in dev_hub.processes():
            print(f"\n--- last lines of {proc.log} ---\n{proc.log_tail(30)}")
        dev_hub.down(lambda _: None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def world(installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


class Person:
    """Someone signed in to the hub, calling the airlock's API with their own token."""

    def __init__(
        self, hub: HubEndpoints, platform: DevCluster, name: str, token: str | None = None
    ) -> None:
        """Signed in through the hub's form; or calling with `token` (a notebook's)."""
        self.name = name
        self.url = f"{hub.probe_url}{AIRLOCK_PREFIX}"
        if token is None:
            password = DevHub(platform, "airlock-hub").password_file.read_text().strip()
            self.browser, self.token = sign_in(hub.probe_url, name, password, "test_airlock")
        else:
            self.browser, self.token = requests.Session(), token

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(
            method,
            self.url + path,
            headers={"Authorization": f"token {self.token}"},
            timeout=60,
            **kwargs,
        )

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        assert response.status_code < 300, (response.status_code, response.text)
        return response.json()

    def refused(self, status: int, method: str, path: str, **kwargs: Any) -> str:
        response = self.call(method, path, **kwargs)
        assert response.status_code == status, (response.status_code, response.text)
        return str(response.json()["error"])

    def export(self, root: Path, project: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`tre export submit` as in a notebook: the token and the airlock's URL from the
        environment the hub gives every notebook."""
        return subprocess.run(
            [TRE, "-o", "json", "export", "submit", "--root", str(root), "--project", project,
             *args],
            env={**os.environ, "JUPYTERHUB_API_TOKEN": self.token, "TRE_AIRLOCK_URL": self.url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip


def project_storage(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "out").mkdir(parents=True)
    (root / "out" / "table.csv").write_bytes(TABLE)
    (root / "notes.txt").write_bytes(NOTES)
    return root


def ready_project(world: World) -> str:
    _, project, _ = world.approved_project()
    world.reconcile(project)
    return project


def submit(person: Person, root: Path, project: str) -> tuple[str, str]:
    """Wait out the API server's parameter cache for a new workspace (it fails closed)."""
    deadline = time.monotonic() + 20
    while True:
        done = person.export(
            root, project, "out/table.csv", "--supporting", "notes.txt",
            "--description", "readmissions by age band",
            "--context", "Counts over a synthetic cohort of 1500; no cell below 10.",
        )  # fmt: skip
        if done.returncode == 0:
            created = json.loads(done.stdout)
            return created["namespace"], created["name"]
        assert catching_up(done.stderr) and time.monotonic() < deadline, done.stderr


def ravis_export(
    hub: HubEndpoints, dev_platform: DevCluster, world: World, root: Path
) -> tuple[str, str, str]:
    """(project, namespace, name): ravi's export, under review, in a new project of lea's."""
    project = ready_project(world)
    ravi = Person(hub, dev_platform, "ravi")
    namespace, name = submit(ravi, project_storage(root), project)
    return project, namespace, name


def export_status(world: World, namespace: str, name: str) -> dict[str, Any]:
    obj = world.admin.get(EXPORT_REQUESTS, name, namespace)
    assert obj is not None
    return dict(obj.get("status") or {})


def approve(checker: Person, namespace: str, name: str) -> None:
    votes = {"out/table.csv": {"vote": "approve"}, "notes.txt": {"vote": "approve"}}
    checker.ok("POST", f"api/exports/{namespace}/{name}/reviews", json={"votes": votes})


def test_an_export_leaves_through_two_checkers_and_the_lead(
    hub: HubEndpoints, dev_platform: DevCluster, world: World, tmp_path: Path
) -> None:
    project = ready_project(world)
    lea, ravi = Person(hub, dev_platform, "lea"), Person(hub, dev_platform, "ravi")
    olga, omar = Person(hub, dev_platform, OLGA), Person(hub, dev_platform, OMAR)
    namespace, name = submit(ravi, project_storage(tmp_path), project)
    assert namespace == namespace_name(project)
    request = world.admin.get(EXPORT_REQUESTS, name, namespace)
    assert request is not None and request["spec"]["author"] == "ravi"
    path = f"api/exports/{namespace}/{name}"

    # the checker sees the automated checks and the bytes; the project's people never do
    seen = olga.ok("GET", path)
    assert [f["stored"] for f in seen["files"]] == [True, True]
    assert {c["check"] for c in seen["checks"]["out/table.csv"]["findings"]} >= {
        "type", "small_numbers", "raw_dataset_copy", "declared_hash",
    }  # fmt: skip
    assert olga.call("POST", f"{path}/view/out/table.csv").content == TABLE
    assert "only output checkers" in lea.refused(403, "POST", f"{path}/view/out/table.csv")
    assert ravi.ok("GET", path)["checks"] is None
    access = export_status(world, namespace, name)["access"]
    assert [(a["by"], a["action"], a["path"]) for a in access] == [(OLGA, "view", "out/table.csv")]

    # independent reviews: hidden from each other until both are in
    approve(olga, namespace, name)
    assert omar.ok("GET", path)["reviewsHidden"] == 1
    assert omar.ok("GET", path)["reviews"] == []
    assert "only an Approved request" in lea.refused(403, "POST", f"{path}/release")
    approve(omar, namespace, name)
    world.reconcile(project)
    assert export_status(world, namespace, name)["phase"] == "Approved"
    assert len(lea.ok("GET", path)["reviews"]) == 2
    late = Person(hub, dev_platform, OTTO)
    votes = {"out/table.csv": {"vote": "reject"}, "notes.txt": {"vote": "reject"}}
    words = late.refused(403, "POST", f"{path}/reviews", json={"votes": votes})
    assert "already Approved" in words

    # only the lead releases and downloads; a researcher cannot
    assert "only the project's lead" in ravi.refused(403, "POST", f"{path}/release")
    released = lea.ok("POST", f"{path}/release")
    assert released["released"] == ["out/table.csv"]
    status = export_status(world, namespace, name)
    assert status["phase"] == "Released" and status["release"]["by"] == "lea"
    assert "only the project's lead" in ravi.refused(403, "POST", f"{path}/download/out/table.csv")
    link = lea.ok("POST", f"{path}/download/out/table.csv")
    assert link["expiresInSeconds"] == LINK_SECONDS
    assert requests.get(link["url"], timeout=30).content == TABLE
    assert "was not released" in lea.refused(404, "POST", f"{path}/download/notes.txt")
    time.sleep(LINK_SECONDS + 1)
    assert requests.get(link["url"], timeout=30).status_code == 403  # expired

    # revoke: the copies go, the reason stays, a new link is refused
    fresh = lea.ok("POST", f"{path}/download/out/table.csv")["url"]
    olga.ok("POST", f"{path}/revoke", json={"reason": "cell 50-70 identifies a ward"})
    status = export_status(world, namespace, name)
    assert status["phase"] == "Revoked"
    assert status["revocation"]["reason"] == "cell 50-70 identifies a ward"
    assert requests.get(fresh, timeout=30).status_code == 404
    assert "Released" in lea.refused(403, "POST", f"{path}/download/out/table.csv")
    actions = [(a["by"], a["action"]) for a in export_status(world, namespace, name)["access"]]
    assert actions == [(OLGA, "view"), ("lea", "download"), ("lea", "download")]

    # Everything above reaches the audit chain, derived by the controller from the records.
    world.reconcile(project)
    subject = f"exportrequest/{namespace}/{name}"
    audited = [(e.actor, e.action) for e in world.audit.read_all() if e.subject == subject]
    for event in (
        ("ravi", "export.submit"),
        (OLGA, "export.review"),
        (OMAR, "export.review"),
        (OLGA, "export.view"),
        ("lea", "export.release"),
        ("lea", "export.download"),
        (OLGA, "export.revoke"),
    ):
        assert event in audited, (event, audited)
    assert audited.count(("lea", "export.download")) == 2


def test_bad_submissions_are_refused_and_nothing_is_filed(
    hub: HubEndpoints, dev_platform: DevCluster, world: World, tmp_path: Path
) -> None:
    project = ready_project(world)
    ravi = Person(hub, dev_platform, "ravi")
    root = project_storage(tmp_path)
    (root / "script.py").write_text("print(1)\n")
    (tmp_path / "secret.csv").write_text("a\n1\n")
    (root / "link.csv").symlink_to(tmp_path / "secret.csv")
    before = len(world.admin.list(EXPORT_REQUESTS, namespace=namespace_name(project)))
    common = ("--description", "x", "--context", "a context of some length")
    for args, words in (
        (("../secret.csv",), "contains '..'"),
        (("/etc/passwd",), "is outside project storage"),
        (("link.csv",), "symbolic link"),
        (("script.py",), "type .py is not allowed"),
        (("missing.csv",), "does not exist"),
    ):
        done = ravi.export(root, project, *args, *common)
        assert done.returncode != 0, (args, done.stdout)
        assert words in done.stderr, (args, done.stderr)
    assert len(world.admin.list(EXPORT_REQUESTS, namespace=namespace_name(project))) == before

    # bytes that are not what was declared, and a file that was not declared
    namespace, name = submit(ravi, root, project)
    path = f"api/exports/{namespace}/{name}"
    assert ravi.call("PUT", f"{path}/files/undeclared.csv", data=b"a\n").status_code == 404
    declared = {
        "project": project,
        "context": "Counts over a synthetic cohort of 1500; no cell below 10.",
        "files": [
            {
                "path": "out/table.csv",
                "size": len(TABLE),
                "sha256": hashlib.sha256(TABLE).hexdigest(),
                "description": "readmissions by age band",
            }
        ],
    }
    filed = ravi.ok("POST", "api/exports", json=declared)
    other = f"api/exports/{filed['namespace']}/{filed['name']}"
    forged = TABLE.replace(b"12", b"99")  # same size, other bytes
    words = ravi.refused(400, "PUT", f"{other}/files/out/table.csv", data=forged)
    assert "changed after it was declared" in words
    assert ravi.ok("GET", other)["files"][0]["stored"] is False  # nothing half-stored
    lea = Person(hub, dev_platform, "lea")
    assert "only its author" in lea.refused(403, "PUT", f"{other}/files/out/table.csv", data=TABLE)
    ravi.ok("PUT", f"{other}/files/out/table.csv", data=TABLE)
    assert ravi.ok("GET", other)["files"][0]["stored"] is True
    outsider = Person(hub, dev_platform, "mallory")
    assert outsider.call("GET", path).status_code == 404  # not yours: as if it did not exist


def test_a_copy_of_the_projects_data_is_flagged_by_an_airlock_that_reads_no_dataset(
    hub: HubEndpoints, dev_platform: DevCluster, world: World, tmp_path: Path
) -> None:
    """Review 3, S14: the service runs with its own S3 key, which the S3 server refuses on every
    dataset bucket (test_airlock_reach.py); a file that is a byte copy of the workspace's data
    is still flagged to the checkers, from the fingerprints the controller recorded."""
    airlock = DevHub(dev_platform, "airlock-hub")
    [process] = [p for p in airlock.processes() if p.name == airlock.airlock_process]
    environ = dict(
        line.split(b"=", 1)
        for line in Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
        if b"=" in line
    )
    own_key, _ = airlock_credentials(dev_platform.state_dir / "s3", AirlockScope.of(world.settings))
    assert environ[b"TRE_S3_ACCESS_KEY_ID"].decode() == own_key != dev_platform.s3().access_key
    _, project, dataset = world.approved_project()
    world.reconcile(project)
    root = tmp_path / "project"
    (root / "out").mkdir(parents=True)
    (root / "out" / "table.csv").write_bytes(b"a,b\n1,2\n")  # the dataset's part-0.csv
    (root / "notes.txt").write_bytes(NOTES)
    namespace, name = submit(Person(hub, dev_platform, "ravi"), root, project)
    seen = Person(hub, dev_platform, OLGA).ok("GET", f"api/exports/{namespace}/{name}")
    findings = seen["checks"]["out/table.csv"]["findings"]
    raw = next(f for f in findings if f["check"] == "raw_dataset_copy")
    assert raw["outcome"] == "flag", raw
    assert f"{dataset}:part-0.csv" in raw["detail"], raw


def test_a_release_interrupted_after_its_manifest_completes_once(
    hub: HubEndpoints, dev_platform: DevCluster, world: World, tmp_path: Path
) -> None:
    project = ready_project(world)
    lea, ravi = Person(hub, dev_platform, "lea"), Person(hub, dev_platform, "ravi")
    namespace, name = submit(ravi, project_storage(tmp_path), project)
    for checker in (OLGA, OMAR):
        approve(Person(hub, dev_platform, checker), namespace, name)
    world.reconcile(project)
    obj = world.admin.get(EXPORT_REQUESTS, name, namespace)
    assert obj is not None
    request = ExportRequest.from_object(obj)
    assert request.status.phase.value == "Approved"
    # The service died after copying and writing the manifest, before marking it Released.
    s3 = s3_client(world.settings)
    workspace = world.admin.get(WORKSPACES, project)
    assert workspace is not None
    reports = Desk(Kube(world.admin.api), s3, world.settings).reports(request)
    first = release_export(
        s3, world.settings, request, Workspace.from_object(workspace), reports,
        released_by="lea", now=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    again = lea.ok("POST", f"api/exports/{namespace}/{name}/release")
    assert again["released"] == ["out/table.csv"]
    stored = read_manifest(s3, world.settings.airlock_egress_bucket, ExportRef.of(request))
    assert stored == first  # the one manifest, not a second release
    assert export_status(world, namespace, name)["phase"] == "Released"
    versions = s3.list_object_versions(
        Bucket=world.settings.airlock_egress_bucket, Prefix=ExportRef.of(request).files_prefix
    ).get("Versions", [])
    assert len(versions) == 1  # one verified copy of the one output file


def test_a_browser_signs_in_through_the_hub_and_forms_need_the_xsrf_token(
    hub: HubEndpoints, dev_platform: DevCluster, world: World, tmp_path: Path
) -> None:
    _, namespace, name = ravis_export(hub, dev_platform, world, tmp_path)
    olga = Person(hub, dev_platform, OLGA)
    browser = olga.browser  # signed in to the hub only, as a person's browser is
    page = browser.get(olga.url, timeout=30)  # -> hub authorize -> callback -> the page
    assert page.status_code == 200, page.text[:300]
    assert f"exports/{namespace}/{name}" in page.text
    assert any(c.name == "tre-airlock-session" for c in browser.cookies)
    detail = browser.get(f"{olga.url}exports/{namespace}/{name}", timeout=30)
    assert "automated checks" in detail.text and 'id="review"' in detail.text
    form = {"vote:out/table.csv": "approve", "vote:notes.txt": "approve"}
    # A form posted from elsewhere carries the cookie but not the page's XSRF token.
    forged = browser.post(f"{olga.url}exports/{namespace}/{name}/reviews", data=form, timeout=30)
    assert forged.status_code == 403
    assert export_status(world, namespace, name).get("reviewers", []) == []
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', detail.text)
    assert xsrf is not None
    done = browser.post(
        f"{olga.url}exports/{namespace}/{name}/reviews",
        data={**form, "_xsrf": xsrf.group(1)},
        timeout=30,
    )
    assert done.status_code == 200 and "olga.checker" in done.text
    obj = world.admin.get(EXPORT_REQUESTS, name, namespace)
    assert obj is not None and [r["by"] for r in obj["spec"]["reviews"]] == [OLGA]
    # Nothing is recorded by a GET (a link, an image, a navigation from another site): the
    # view and the download are POSTs, and a POST without the page's XSRF token is refused.
    base = f"{olga.url}exports/{namespace}/{name}"
    for url in (f"{base}/view/out/table.csv", f"{base}/download/out/table.csv"):
        assert browser.get(url, timeout=30).status_code == 405
        assert browser.post(url, timeout=30).status_code == 403
    assert export_status(world, namespace, name).get("access", []) == []
    # The page's own form (with its token) opens the file, and that view is recorded.
    viewed = browser.post(f"{base}/view/out/table.csv", data={"_xsrf": xsrf.group(1)}, timeout=30)
    assert viewed.status_code == 200 and viewed.content == TABLE
    assert viewed.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    access = export_status(world, namespace, name)["access"]
    assert [(a["by"], a["action"]) for a in access] == [(OLGA, "view")]
    # Without a hub session, the API answers 401 and pages send the browser to sign in.
    assert requests.get(f"{olga.url}api/exports", timeout=30).status_code == 401
    signed_out = requests.get(olga.url, timeout=30, allow_redirects=False)
    assert signed_out.status_code == 302
    assert "/hub/api/oauth2/authorize?" in signed_out.headers["Location"]
    assert "code_challenge_method=S256" in signed_out.headers["Location"]


# --- a notebook's token ---------------------------------------------------------------------


def project_of(world: World, lead: str, members: list[str]) -> str:
    """A Ready workspace of `members` led by `lead`."""
    dataset = world.dataset()
    request, project = world.submit(by=lead, lead=lead, members=members, datasets=[dataset])
    world.approve(request, "ann", "bob")
    world.reconcile(project)
    return project


class Notebook:
    """A named server the real hub starts for `person` (its pod stays Pending: no node), and
    the token the hub minted for it, as the notebook's environment carries it."""

    def __init__(self, hub: HubEndpoints, world: World, person: Person, project: str) -> None:
        self.hub, self.person, self.project = hub, person, project
        api = f"{hub.probe_url}/hub/api/users/{person.name}/servers/{project}"
        self.api = api
        deadline = time.monotonic() + 30
        while True:  # the hub's Workspace cache learns of the new workspace within moments
            started = requests.post(
                api, json={}, headers={"Authorization": f"token {person.token}"}, timeout=30
            )
            if started.status_code in (201, 202) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert started.status_code in (201, 202), started.text
        namespace = namespace_name(project)
        deadline = time.monotonic() + 30
        pods: list[dict[str, Any]] = []
        while not pods and time.monotonic() < deadline:
            pods = [
                p
                for p in world.admin.list(PODS, namespace=namespace)
                if p["metadata"]["annotations"].get("tre.ucloud.org/user") == person.name
            ]
            time.sleep(0.3)
        [pod] = pods
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["TRE_PROJECT"] == project
        self.token = str(env["JUPYTERHUB_API_TOKEN"])

    def stop(self) -> None:
        requests.delete(
            self.api, headers={"Authorization": f"token {self.person.token}"}, timeout=60
        )

    def call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(method, url, headers=headers, timeout=60, **kwargs)

    def airlock(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.call(method, self.person.url + path, **kwargs)

    def hub_api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.call(method, f"{self.hub.probe_url}/hub/api/{path}", **kwargs)


def released_export(
    hub: HubEndpoints, dev_platform: DevCluster, world: World, tmp_path: Path
) -> tuple[str, str]:
    """An export of a project of lea and ravi, approved by omar and otto, released by lea."""
    project, namespace, name = ravis_export(hub, dev_platform, world, tmp_path / "released")
    lea = Person(hub, dev_platform, "lea")
    for checker in (OMAR, OTTO):
        approve(Person(hub, dev_platform, checker), namespace, name)
    world.reconcile(project)
    lea.ok("POST", f"api/exports/{namespace}/{name}/release")
    return namespace, name


def test_a_checkers_notebook_token_lists_views_reviews_and_revokes_nothing(
    hub: HubEndpoints, dev_platform: DevCluster, world: World, tmp_path: Path
) -> None:
    # Another project's export under review, and one released: olga may act on both from
    # her browser sign-in, and on neither from a notebook.
    _, namespace, name = ravis_export(hub, dev_platform, world, tmp_path)
    rel_namespace, rel_name = released_export(hub, dev_platform, world, tmp_path)
    olga = Person(hub, dev_platform, OLGA)
    assert olga.ok("GET", f"api/exports/{namespace}/{name}")["may"]["review"] is True

    lab = project_of(world, OLGA, [OLGA, "rik"])
    notebook = Notebook(hub, world, olga, lab)
    try:
        # What the hub says of the token: the person and her groups, and a scope filtered to
        # the one server it was made for.
        said = notebook.hub_api("GET", "user").json()
        print(f"GET /hub/api/user for a server token: {said}")
        assert said["name"] == OLGA and "tre:output-checkers" in said["groups"]
        assert f"access:servers!server={OLGA}/{lab}" in said["scopes"]
        assert "access:services!service=airlock" in said["scopes"]

        path = f"api/exports/{namespace}/{name}"
        words = "not with a notebook's token"
        for method, url, body in (
            ("GET", "api/exports", None),
            ("GET", path, None),
            ("POST", f"{path}/view/out/table.csv", None),
            ("POST", f"{path}/reviews", {"votes": {"out/table.csv": {"vote": "approve"},
                                                   "notes.txt": {"vote": "approve"}}}),
            ("POST", f"api/exports/{rel_namespace}/{rel_name}/revoke",
             {"reason": "a reason long enough"}),
            ("POST", f"api/exports/{rel_namespace}/{rel_name}/download/out/table.csv", None),
            ("POST", f"api/exports/{rel_namespace}/{rel_name}/release", None),
        ):  # fmt: skip
            answer = notebook.airlock(method, url, json=body)
            assert answer.status_code == 403, (url, answer.status_code, answer.text)
            assert words in answer.json()["error"], answer.text
        status = export_status(world, namespace, name)
        assert status.get("access", []) == [] and status.get("reviewers", []) == []
        released = export_status(world, rel_namespace, rel_name)
        assert released["phase"] == "Released" and "revocation" not in released
        # Her own project's exports neither: the token is for submitting.
        assert notebook.airlock("GET", "api/exports").status_code == 403
    finally:
        notebook.stop()


def test_a_notebooks_token_files_in_its_own_project_only(
    hub: HubEndpoints, dev_platform: DevCluster, world: World, tmp_path: Path
) -> None:
    # rik is a member of both projects.
    project_a = project_of(world, "lea", ["lea", "rik"])
    project_b = project_of(world, "lea", ["lea", "rik"])
    rik = Person(hub, dev_platform, "rik")
    in_b = submit(rik, project_storage(tmp_path / "b"), project_b)  # his own sign-in: fine
    notebook = Notebook(hub, world, rik, project_a)
    try:
        from_a = Person(hub, dev_platform, "rik", token=notebook.token)
        # `tre export submit` in A's notebook files in A, and its bytes land in quarantine.
        namespace, name = submit(from_a, project_storage(tmp_path / "a"), project_a)
        assert namespace == namespace_name(project_a)
        filed = world.admin.get(EXPORT_REQUESTS, name, namespace)
        assert filed is not None and filed["spec"]["author"] == "rik"
        # Not in B: refused before anything is filed there.
        before = {o["metadata"]["name"] for o in world.admin.list(
            EXPORT_REQUESTS, namespace=namespace_name(project_b))}  # fmt: skip
        done = from_a.export(
            project_storage(tmp_path / "a2"), project_b, "out/table.csv",
            "-d", "x", "-c", "ten characters and more",
        )  # fmt: skip
        assert done.returncode != 0
        assert f"files exports of project {project_a} only" in done.stderr, done.stderr
        after = {o["metadata"]["name"] for o in world.admin.list(
            EXPORT_REQUESTS, namespace=namespace_name(project_b))}  # fmt: skip
        assert after == before
        # Nor upload to, or withdraw, B's export (his own, filed from his browser sign-in).
        b_path = f"api/exports/{in_b[0]}/{in_b[1]}"
        upload = notebook.airlock("PUT", f"{b_path}/files/out/table.csv", data=TABLE)
        assert upload.status_code == 403 and f"acts for project {project_a} only" in upload.text
        assert notebook.airlock("POST", f"{b_path}/withdraw").status_code == 404
        assert not (world.admin.get(EXPORT_REQUESTS, in_b[1], in_b[0]) or {})["spec"].get(
            "withdrawn"
        )
        # His own export in A he withdraws from A's notebook.
        withdrawn = notebook.airlock("POST", f"api/exports/{namespace}/{name}/withdraw")
        assert withdrawn.status_code == 200, withdrawn.text
    finally:
        notebook.stop()


def test_a_notebooks_token_reaches_nothing_else_on_the_hub(
    hub: HubEndpoints, dev_platform: DevCluster, world: World
) -> None:
    lab = project_of(world, "lea", ["lea", "rik"])
    rik = Person(hub, dev_platform, "rik")
    notebook = Notebook(hub, world, rik, lab)
    try:
        assert notebook.hub_api("GET", "user").status_code == 200  # who am I: always
        # Its own user: at most what reporting activity needs (no servers, no tokens).
        own = notebook.hub_api("GET", "users/rik")
        print(f"GET /hub/api/users/rik with a server token: {own.status_code} {own.text}")
        assert own.status_code in (200, 403, 404)
        if own.status_code == 200:
            assert not {"servers", "auth_state", "roles"} & set(own.json())
        for method, path, body in (
            ("GET", "users", None),  # the user list
            ("GET", "users/lea", None),  # another user
            ("POST", "users/rik/tokens", {"note": "more", "expires_in": 60}),  # a new token
            ("GET", "users/rik/tokens", None),
            ("POST", f"users/rik/servers/{lab}-2", {}),  # another server of rik's
            ("DELETE", f"users/rik/servers/{lab}", None),  # its own server, stopped
            ("POST", "users/lea/servers/x", {}),  # another user's server
            ("GET", "groups", None),
            ("GET", "services", None),
        ):
            answer = notebook.hub_api(method, path, json=body)
            assert answer.status_code in (403, 404), (method, path, answer.status_code)
        # No OAuth sign-in with it: the hub's authorize page takes a browser's cookie only,
        # so the airlock's own client cannot be made to issue a person's token from it.
        authorize = notebook.call(
            "GET",
            f"{hub.probe_url}/hub/api/oauth2/authorize?client_id=service-airlock"
            "&response_type=code&redirect_uri=x",
            allow_redirects=False,
        )
        assert authorize.status_code in (302, 403), authorize.status_code
        assert "code=" not in authorize.headers.get("Location", "")
        # Another of rik's servers (if it existed) is not reached through the proxy either.
        other = notebook.call("GET", f"{hub.probe_url}/user/rik/{lab}-2/api", allow_redirects=False)
        assert other.status_code != 200
    finally:
        notebook.stop()


# --- no one person can stall everyone (S10, F20) --------------------------------------------

FLOOD_BYTES = b"a,b\n" * 250_000  # 1,000,000 bytes, one declared file's
FLOOD_FILES = 16


def file_export(person: Person, project: str, n_files: int) -> tuple[str, str]:
    """An export of `n_files` declared files of FLOOD_BYTES, filed through the API (waiting
    out the API server's parameter cache for a new workspace)."""
    declared = {
        "project": project,
        "context": "A flood of files, to see that no one stalls the airlock.",
        "files": [
            {"path": f"out/f{i}.csv", "size": len(FLOOD_BYTES),
             "sha256": hashlib.sha256(FLOOD_BYTES).hexdigest(), "description": "a flood"}
            for i in range(n_files)
        ],
    }  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        filed = person.call("POST", "api/exports", json=declared)
        if filed.status_code == 201:
            return filed.json()["namespace"], filed.json()["name"]
        assert "no params found" in filed.text and time.monotonic() < deadline, filed.text


def held_put(airlock_url: str, token: str, path: str) -> socket.socket:
    """A connection straight to the airlock (`HubEndpoints.airlock_url`, as a notebook
    reaches it) that sends a PUT's headers, declaring the body, and never sends it."""
    url = urllib.parse.urlsplit(airlock_url)
    assert url.hostname == "127.0.0.1" and url.port
    conn = socket.create_connection((url.hostname, url.port), timeout=30)
    conn.sendall(
        f"PUT {url.path}{path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: token {token}\r\nContent-Length: {len(FLOOD_BYTES)}\r\n\r\n".encode()
    )
    return conn


def wait_for_answers(conns: list[socket.socket], count: int, timeout: float) -> dict[int, bytes]:
    """What the server sent on each connection (by index) that it closed, until `count` are
    closed (bounded by `timeout`): b"" for one closed without an answer."""
    selector = selectors.DefaultSelector()
    received = {i: b"" for i in range(len(conns))}
    for i, conn in enumerate(conns):
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_READ, i)
    closed: dict[int, bytes] = {}
    deadline = time.monotonic() + timeout
    while len(closed) < count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            i = key.data
            try:
                data = conns[i].recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                received[i] += data
            else:
                selector.unregister(conns[i])
                closed[i] = received[i]
    selector.close()
    return closed


def closed_while_trickling(conn: socket.socket, timeout: float) -> bool:
    """Send a byte a second (under the idle bound, far under the floor) until the server
    closes the connection (True) or `timeout` passes (False)."""
    conn.settimeout(1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn.sendall(b"a")
            if conn.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:  # reset
            return True
    return False


def health(hub: HubEndpoints) -> dict[str, Any]:
    answer = requests.get(f"{hub.airlock_url}health", timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_no_one_person_stalls_everyone(
    hub: HubEndpoints, dev_platform: DevCluster, world: World, tmp_path: Path
) -> None:
    rel_namespace, rel_name = released_export(hub, dev_platform, world, tmp_path)
    flooded = project_of(world, "fay", ["fay", "fred"])
    fred, olga, lea = (Person(hub, dev_platform, who) for who in ("fred", OLGA, "lea"))
    namespace, name = file_export(fred, flooded, FLOOD_FILES)
    path = f"api/exports/{namespace}/{name}"

    # The reproduction: 16 uploads whose bodies never come.
    conns = [
        held_put(hub.airlock_url, fred.token, f"{path}/files/out/f{i}.csv")
        for i in range(FLOOD_FILES)
    ]
    try:
        # Beyond the few one person may hold, each is answered at once: 429, with the reason.
        answered = wait_for_answers(conns, FLOOD_FILES - 2, timeout=60)
        refused = [text for text in answered.values() if text.startswith(b"HTTP/1.1 429")]
        assert len(refused) >= FLOOD_FILES - 2, answered
        assert all(b"the most one person may have at once" in text for text in refused)
        assert b"Retry-After:" in refused[0]
        # Meanwhile another person's list and another project's revoke complete.
        listed = olga.ok("GET", "api/exports")["items"]
        assert f"{rel_namespace}/{rel_name}" in {f"{r['namespace']}/{r['name']}" for r in listed}
        revoked = lea.ok(
            "POST", f"api/exports/{rel_namespace}/{rel_name}/revoke",
            json={"reason": "revoked during a flood"},
        )  # fmt: skip
        assert [key.rsplit("/files/", 1)[1] for key in revoked["revoked"]] == ["out/table.csv"]
        assert export_status(world, rel_namespace, rel_name)["phase"] == "Revoked"
        said = health(hub)
        assert said["ok"] is True and said["uploads"]["running"] <= 2, said
        # The uploads the airlock did take are cut once silent: closed, nothing stored.
        rest = wait_for_answers(conns, FLOOD_FILES, timeout=60)
        assert len(rest) == FLOOD_FILES, rest
        assert not any(text.startswith(b"HTTP/1.1 2") for text in rest.values()), rest
    finally:
        for conn in conns:
            conn.close()
    assert not any(f["stored"] for f in fred.ok("GET", path)["files"])

    # An upload that trickles (a byte a second, under the idle bound) is cut at the floor.
    trickle = held_put(hub.airlock_url, fred.token, f"{path}/files/out/f1.csv")
    try:
        assert closed_while_trickling(trickle, timeout=60)
    finally:
        trickle.close()

    # Every slot is free again: the member uploads as usual.
    deadline = time.monotonic() + 30
    while health(hub)["uploads"]["running"] and time.monotonic() < deadline:
        time.sleep(0.5)
    stored = fred.ok("PUT", f"{path}/files/out/f0.csv", data=FLOOD_BYTES)
    assert stored["size"] == len(FLOOD_BYTES)

    # Filing is bounded per person and hour (F20): one more is 429 with the wait; fay files.
    filed = 1
    while filed < FILINGS:
        file_export(fred, flooded, 1)
        filed += 1
    over = fred.call("POST", "api/exports", json={
        "project": flooded, "context": "one more than the limit",
        "files": [{"path": "out/x.csv", "size": 4, "sha256": "0" * 64, "description": "x"}],
    })  # fmt: skip
    assert over.status_code == 429, over.text
    assert "exports filed in the last hour" in over.json()["error"], over.text
    assert int(over.headers["Retry-After"]) > 0
    file_export(Person(hub, dev_platform, "fay"), flooded, 1)
