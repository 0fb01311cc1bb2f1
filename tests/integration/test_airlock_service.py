"""The airlock service end to end: a real hub (its OAuth and tokens), the real `tre airlock
serve` process behind the hub's proxy, the real API server (every change of an export made as
the person, by impersonation, and judged by the admission policies), the real S3 server.

Behaviours under test:
- a member submits two files with `tre export submit` and a hub-issued token; the bytes land
  in quarantine, the request in the project's namespace, filed in the member's name;
- an output checker sees the automated checks and opens a file (the view is recorded in the
  export's status first); the project's own people never see quarantined bytes;
- reviews are hidden from each other until the decision; two checkers approve, the
  controller makes it Approved; a third vote is refused;
- only the project's lead releases; the lead downloads each released file through a
  short-lived link and gets the same bytes; the link stops working once it expires;
- a revoke removes the egress copies and records why; the link stops working;
- bad input: a path out of project storage, a disallowed type, bytes that are not what was
  declared, an undeclared file: clear refusals, nothing filed or stored;
- a release interrupted after its manifest was written (the service killed) completes once
  when asked again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
import time
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
from provisioner.kube.api import Kube
from provisioner.kube.resources import EXPORT_REQUESTS, WORKSPACES
from provisioner.models.resources import ExportRequest, Workspace
from provisioner.models.settings import Settings
from provisioner.planning.names import AIRLOCK_PREFIX, namespace_name
from provisioner.storage.s3 import s3_client
from tests.integration.workspace_world import World
from tests.jupyter_clients import sign_in

pytestmark = pytest.mark.integration
TRE = str(Path(sys.executable).with_name("tre"))
OLGA, OMAR = DEV_OUTPUT_CHECKERS
OTTO = "otto.checker"  # a third checker, for a vote after the decision
# Seconds a download link lives in this module's airlock: long enough to use it, short
# enough to see it expire.
LINK_SECONDS = 4
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

    def __init__(self, hub: HubEndpoints, platform: DevCluster, name: str) -> None:
        password = DevHub(platform, "airlock-hub").password_file.read_text().strip()
        self.name = name
        self.browser, self.token = sign_in(hub.probe_url, name, password, "test_airlock")
        self.url = f"{hub.probe_url}{AIRLOCK_PREFIX}"

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
        assert "no params found" in done.stderr and time.monotonic() < deadline, done.stderr


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
    assert olga.call("GET", f"{path}/files/out/table.csv").content == TABLE
    assert "only output checkers" in lea.refused(403, "GET", f"{path}/files/out/table.csv")
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
    assert "only the project's lead" in ravi.refused(403, "GET", f"{path}/download/out/table.csv")
    link = lea.ok("GET", f"{path}/download/out/table.csv")
    assert link["expiresInSeconds"] == LINK_SECONDS
    assert requests.get(link["url"], timeout=30).content == TABLE
    assert "was not released" in lea.refused(404, "GET", f"{path}/download/notes.txt")
    time.sleep(LINK_SECONDS + 1)
    assert requests.get(link["url"], timeout=30).status_code == 403  # expired

    # revoke: the copies go, the reason stays, a new link is refused
    fresh = lea.ok("GET", f"{path}/download/out/table.csv")["url"]
    olga.ok("POST", f"{path}/revoke", json={"reason": "cell 50-70 identifies a ward"})
    status = export_status(world, namespace, name)
    assert status["phase"] == "Revoked"
    assert status["revocation"]["reason"] == "cell 50-70 identifies a ward"
    assert requests.get(fresh, timeout=30).status_code == 404
    assert "Released" in lea.refused(403, "GET", f"{path}/download/out/table.csv")
    actions = [(a["by"], a["action"]) for a in export_status(world, namespace, name)["access"]]
    assert actions == [(OLGA, "view"), ("lea", "download"), ("lea", "download")]


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
    project = ready_project(world)
    ravi = Person(hub, dev_platform, "ravi")
    namespace, name = submit(ravi, project_storage(tmp_path), project)
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
    # Without a hub session, the API answers 401 and pages send the browser to sign in.
    assert requests.get(f"{olga.url}api/exports", timeout=30).status_code == 401
    signed_out = requests.get(olga.url, timeout=30, allow_redirects=False)
    assert signed_out.status_code == 302
    assert "/hub/api/oauth2/authorize?" in signed_out.headers["Location"]
    assert "code_challenge_method=S256" in signed_out.headers["Location"]
