"""Nothing leaves through the browser: the gate in front of every notebook, for real.

A platform of its own with a node (`tre dev up --node`), whose hub gives public workspaces
small browser limits (PLATFORM_ENV) so a test crosses them in seconds. Every request goes as
a member's own browser session goes: through the hub's proxy with the member's own token, to
their running server, whose pod is the notebook container and the gate (images/gate).

Behaviours under test:
- every way out is refused by the gate, with the message JupyterLab shows, and recorded:
  raw file serving (/files/), ?download=1, nbconvert, a binary (base64) read, a read of a
  dataset file (also by another spelling of its path and through /proc), a copy of a dataset
  file under /project above the read cap; a copy under the cap is served and recorded with
  the dataset object's sha256;
- output past the day's budget: a cell that prints more than the budget gets its output cut
  with a notice under the cell, the kernel keeps working, the crossing is recorded, and file
  reads are refused for the rest of the day, also from a server started again; uploads above
  the cap are refused, others recorded;
- the records reach the platform's audit log (through the airlock and the controller), and a
  used-up budget shows on the workspace;
- the researcher has no hand on the gate: the notebook container sees no process of it and
  cannot take its port; a server the researcher starts on another port listens, and the
  proxy routes the member's URL to the gate's port only; killing the Jupyter server (and with
  it every process the researcher can see) leaves the gate running, unrestarted, and the
  browser meets only it;
- JupyterLab keeps doing its job: the application loads, notebooks save, kernels run.
Traffic goes only to loopback and to pods of the node.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
import requests
import websocket

from provisioner.audit.chain import AuditEntry
from provisioner.devcluster.binaries import K8S_VERSION, cache_dir
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.hub import DevHub
from provisioner.kube.resources import PODS
from provisioner.models.settings import DEFAULT_BROWSER_LIMITS
from provisioner.planning.names import namespace_name
from tests.integration.conftest import Browse
from tests.integration.platform_with_node import (
    Start,
    connect_code,
    last_json,
    ready_project,
)
from tests.integration.workspace_world import World
from tests.jupyter_clients import HubError, Notebook

pytestmark = pytest.mark.integration

MIB = 1 << 20
# Public workspaces of this platform: small enough to cross in a test.
PUBLIC_LIMITS = {"readCapMib": 1, "uploadCapMib": 1, "contentBudgetMib": 4, "otherBudgetMib": 512}
PLATFORM_ENV = {
    "TRE_BROWSER_LIMITS_BY_TIER": json.dumps(
        {
            **{
                tier.value: limits.model_dump(by_alias=True)
                for tier, limits in DEFAULT_BROWSER_LIMITS.items()
            },
            "public": PUBLIC_LIMITS,  # the other tiers keep the platform's defaults
        }
    )
}


@pytest.fixture(scope="module")
def world(world_with_node: World) -> World:
    return world_with_node


def get(notebook: Notebook, path: str, **params: str) -> requests.Response:
    """GET a path of the member's server through the proxy, as their browser does."""
    return requests.get(
        f"{notebook.base}/{path}",
        params=params,
        headers={"Authorization": f"token {notebook.token}"},
        timeout=60,
    )


def put_file(notebook: Notebook, path: str, content: str) -> requests.Response:
    return notebook.api(
        "PUT", f"/contents/{path}", json={"type": "file", "format": "text", "content": content}
    )


def gate_records(world: World, platform: DevCluster, project: str) -> list[dict[str, Any]]:
    """The gate's records (its standard output), read as the platform reads a container's
    log: through the API server and the kubelet."""
    (pod,) = world.admin.list(PODS, namespace=namespace_name(project))
    kubectl = cache_dir() / "bin" / f"k8s-{K8S_VERSION}" / "kubectl"
    done = subprocess.run(
        [str(kubectl), f"--kubeconfig={platform.kubeconfig}", "logs", "-n",
         namespace_name(project), pod["metadata"]["name"], "-c", "gate"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def audited(world: World, project: str, action: str, timeout: float = 90) -> list[AuditEntry]:
    """The audit entries `action` of `project`, once the gate has sent its records to the
    airlock (about a second after they happen) and a pass of the controller has audited them."""
    deadline = time.monotonic() + timeout
    while True:
        world.reconcile(project)
        found = [
            e
            for e in world.audit.read_all()
            if e.action == action and e.details.get("project") == project
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(2)


def proxy_routes(platform: DevCluster) -> dict[str, Any]:
    """The proxy's routing table, from its API (in the node's network namespace, where the
    dev platform runs it), with the token the hub and the proxy share."""
    hub = DevHub(platform)
    endpoints = hub.endpoints()
    assert endpoints is not None
    token = (hub.dir / "proxy-token").read_text().strip()
    code = (
        "import urllib.request\n"
        f"request = urllib.request.Request('{endpoints.proxy_api_url}/api/routes',\n"
        f"    headers={{'Authorization': 'token {token}'}})\n"
        "print(urllib.request.urlopen(request, timeout=10).read().decode())\n"
    )
    in_node = ["nsenter", "-t", str(platform.node().holder_pid), "-n", "--", sys.executable]
    done = subprocess.run([*in_node, "-c", code], capture_output=True, text=True, check=True)
    routes: dict[str, Any] = json.loads(done.stdout)
    return routes


def refused(response: requests.Response, rule: str) -> str:
    """The message of a gate refusal, after checking it is one (JupyterLab shows `message`)."""
    assert response.status_code in (403, 413, 429), (response.status_code, response.text[:300])
    body = response.json()
    assert body["reason"] == rule, body
    return str(body["message"])


def test_every_way_out_through_the_browser_is_refused_and_recorded(
    world: World, platform_with_node: DevCluster, sign_in: Any, start: Start
) -> None:
    _, project, dataset = ready_project(world, ["vera"], classification="internal")
    notebook = start(sign_in("vera"), "vera", project)
    data = f"data/{dataset}/part-0.csv"
    notebook.run(
        "import shutil\n"
        f"shutil.copy('/{data}', '/project/renamed.csv')\n"
        "open('/project/big.csv', 'w').write('x,y\\n' * (5 * 1024 * 1024))\n"
        "open('/project/image.bin', 'wb').write(bytes(range(256)))\n"
    )

    assert "tre export submit" in refused(get(notebook, "files/project/renamed.csv"), "raw-files")
    refused(get(notebook, "api/contents/project/renamed.csv", download="1"), "download")
    refused(get(notebook, "nbconvert/html/project/any.ipynb"), "nbconvert")
    refused(get(notebook, "api/contents/project/image.bin", type="file", format="base64"),
            "binary-read")  # fmt: skip
    refused(get(notebook, "api/contents/project/image.bin"), "binary-read")
    message = refused(get(notebook, f"api/contents/{data}"), "dataset-read")
    assert "/data" in message
    refused(get(notebook, f"api/contents/project/../{data}"), "dataset-read")
    refused(get(notebook, f"api/contents/proc/self/root/{data}"), "dataset-read")
    refused(get(notebook, "api/contents/project/big.csv"), "size-cap")
    # The dataset's directory still lists (names only), and a small copy is served: recorded
    # with the dataset object's own hash, for whoever supervises to see.
    assert get(notebook, f"api/contents/data/{dataset}", content="0").status_code == 200
    copy = get(notebook, "api/contents/project/renamed.csv")
    assert copy.status_code == 200 and copy.json()["content"] == "a,b\n1,2\n"

    records = gate_records(world, platform_with_node, project)
    rules = {r["rule"] for r in records if r["event"] == "request.refused"}
    assert {
        "raw-files",
        "download",
        "nbconvert",
        "binary-read",
        "dataset-read",
        "size-cap",
    } <= rules
    (served,) = [r for r in records if r["event"] == "file.served"]
    original = world.s3.get_object(Bucket=world.bucket, Key=f"{dataset}/part-0.csv")["Body"].read()
    assert served["sha256"] == hashlib.sha256(original).hexdigest()
    assert (served["user"], served["project"], served["path"]) == (
        "vera", project, "/project/renamed.csv"
    )  # fmt: skip
    # ... and in the platform's audit log, through the airlock and the controller
    (entry,) = audited(world, project, "browser.file.served")
    assert (entry.actor, entry.details["path"], entry.details["sha256"]) == (
        "vera", "/project/renamed.csv", served["sha256"]
    )  # fmt: skip
    assert {e.details["rule"] for e in audited(world, project, "browser.request.refused")} >= {
        "raw-files", "dataset-read", "size-cap"
    }  # fmt: skip


def test_output_past_the_budget_is_cut_and_the_kernel_keeps_working(
    world: World, platform_with_node: DevCluster, sign_in: Any, start: Start
) -> None:
    _, project, _ = ready_project(world, ["walt"], classification="public")
    notebook = start(sign_in("walt"), "walt", project)
    assert get(notebook, "lab").status_code == 200  # the application loads (other budget)

    # 6 MiB printed against a 4 MiB budget, slowly (under the Jupyter server's own rate limit
    # of 1 MB/s, which would cut it first): the browser gets at most the budget, then a notice.
    out = notebook.run(
        "import time\nfor _ in range(96):\n    print('z' * 65536); time.sleep(0.1)\n", timeout=180
    )
    assert len(out) < PUBLIC_LIMITS["contentBudgetMib"] * MIB
    assert "[output cut" in out and "tre export submit" in out
    # The kernel still runs code; its output is cut too.
    after = notebook.run("x = 6 * 7\nprint(x)")
    assert "42" not in after and "[output cut" in after
    # File reads are refused for the rest of the day, with the reason.
    assert put_file(notebook, "project/small.csv", "a\n1\n").status_code == 201
    assert "used up" in refused(get(notebook, "api/contents/project/small.csv"), "budget")

    records = gate_records(world, platform_with_node, project)
    (crossed,) = [r for r in records if r["event"] == "budget.crossed"]
    assert crossed["meter"] == "content" and crossed["user"] == "walt"
    # Audited, named on the workspace, and not reset by starting the server again: the hub
    # starts the next gate from the workspace's count of the day.
    (entry,) = audited(world, project, "browser.budget.crossed")
    assert entry.actor == "walt" and entry.details["meter"] == "content"
    workspace = world.workspace(project) or {}
    condition = next(
        c for c in workspace["status"]["conditions"] if c["type"] == "BrowserWithinBudget"
    )
    assert condition["status"] == "False" and "walt (content)" in condition["message"]
    (usage,) = workspace["status"]["browser"]
    assert usage["user"] == "walt" and "content" in usage["crossed"]
    hub = sign_in("walt")
    hub.stop("walt", project)
    hub.wait_gone("walt", project, 120)
    again = start(hub, "walt", project)
    assert "used up" in refused(get(again, "api/contents/project/small.csv"), "budget")


def test_uploads_above_the_cap_are_refused_and_the_others_recorded(
    world: World, platform_with_node: DevCluster, sign_in: Any, start: Start
) -> None:
    _, project, _ = ready_project(world, ["xena"], classification="public")
    notebook = start(sign_in("xena"), "xena", project)

    assert put_file(notebook, "project/notes.txt", "hello").status_code == 201
    big = put_file(notebook, "project/big.txt", "y" * (2 * MIB))
    refused(big, "upload-cap")
    assert "big.txt" not in notebook.run("import os; print(os.listdir('/project'))")

    records = gate_records(world, platform_with_node, project)
    (upload,) = [r for r in records if r["event"] == "upload.received"]
    assert upload["path"] == "/project/notes.txt"
    assert upload["sha256"] == hashlib.sha256(b"hello").hexdigest()


# What a researcher can do from a kernel to get around the gate: look for it, take its port,
# serve from another port, kill the Jupyter server.
AROUND = (
    "import os, socket, subprocess, sys\n"
    "names = []\n"
    "for p in os.listdir('/proc'):\n"
    "    try:\n"
    "        raw = open(f'/proc/{{p}}/cmdline', 'rb').read()\n"
    "        names.append(raw.replace(b'\\0', b' ').decode())\n"
    "    except (OSError, ValueError):\n"
    "        pass\n"
    "print('PROCS', sorted(n for n in names if n))\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "try:\n"
    "    s.bind(('0.0.0.0', {gate_port})); print('GATE-PORT taken')\n"
    "except OSError as exc:\n"
    "    print('GATE-PORT', exc.errno)\n"
    "s.close()\n"
    "subprocess.Popen([sys.executable, '-m', 'http.server', '--bind', '0.0.0.0', '{other_port}'],\n"
    "                 cwd='/data', start_new_session=True,\n"
    "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
)
OTHER_PORT = 9999


def test_the_researcher_has_no_hand_on_the_gate(
    world: World, platform_with_node: DevCluster, sign_in: Any, start: Start
) -> None:
    _, project, _ = ready_project(world, ["yuri"], classification="internal")
    notebook = start(sign_in("yuri"), "yuri", project)
    port = world.settings.notebook_port
    out = notebook.run(AROUND.format(gate_port=port, other_port=OTHER_PORT))
    lines = {line.split(" ", 1)[0]: line for line in out.splitlines() if line}
    # The gate's process is not among what the researcher sees, and its port is not theirs.
    assert "jupyterhub-singleuser" in lines["PROCS"], out
    assert "'/gate" not in lines["PROCS"] and "GATE_" not in lines["PROCS"], out
    assert lines["GATE-PORT"] == "GATE-PORT 98", out  # EADDRINUSE

    # The researcher's own server listens in the pod, and the browser cannot reach it: the
    # proxy routes the member's URL to the pod at the gate's port and nowhere else.
    time.sleep(1)
    assert notebook.run(connect_code("127.0.0.1", OTHER_PORT)).strip() == "connected"
    (pod,) = world.admin.list(PODS, namespace=namespace_name(project))
    routes = proxy_routes(platform_with_node)
    (target,) = [r["target"] for path, r in routes.items() if path.rstrip("/").endswith(project)]
    assert target == f"http://{pod['status']['podIP']}:{port}"

    # Killing the Jupyter server (every process the researcher can see goes with it) leaves
    # the gate as it was: the browser meets the gate while the server is down, and after.
    with contextlib.suppress(HubError, OSError, websocket.WebSocketException):
        # The kernel dies with its server: no answer.
        notebook.run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", timeout=10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = get(notebook, "files/anything")
        assert response.status_code != 200, response.text[:200]
        if response.status_code in (403, 502) and response.headers.get(
            "Content-Type", ""
        ).startswith("application/json"):
            assert response.json()["reason"] in ("raw-files", "upstream")
        time.sleep(1)
    pods = world.admin.list(PODS, namespace=namespace_name(project))
    for pod in pods:  # still there, or stopped by the hub: never the gate restarted
        statuses = {c["name"]: c for c in pod["status"].get("containerStatuses", [])}
        assert statuses["gate"]["restartCount"] == 0


def test_jupyterlab_keeps_working_behind_the_gate(world: World, sign_in: Any, start: Start) -> None:
    _, project, _ = ready_project(world, ["zane"], classification="internal")
    notebook = start(sign_in("zane"), "zane", project)

    lab = get(notebook, "lab")
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    cells = [{"cell_type": "code", "metadata": {}, "source": "print(6 * 7)",
              "outputs": [], "execution_count": None}]  # fmt: skip
    saved = notebook.api(
        "PUT",
        "/contents/project/work.ipynb",
        json={"type": "notebook", "content": {"cells": cells, "metadata": {},
              "nbformat": 4, "nbformat_minor": 5}},
    )  # fmt: skip
    assert saved.status_code == 201, saved.text
    opened = notebook.api("GET", "/contents/project/work.ipynb")
    assert opened.status_code == 200
    assert opened.json()["content"]["cells"][0]["source"] == "print(6 * 7)"
    assert last_json(notebook.run("import json; print(json.dumps(6 * 7))")) == 42
    marker = uuid.uuid4().hex
    assert put_file(notebook, "project/code.py", f"# {marker}\n").status_code == 201
    assert marker in notebook.api("GET", "/contents/project/code.py").json()["content"]


PLOT_CELL = (
    "import matplotlib\n"
    "matplotlib.use('agg')\n"
    "import matplotlib.pyplot as plt\n"
    "%matplotlib inline\n"
    "plt.plot([1, 2, 3], [3, 1, 2]); plt.title('behind the gate')\n"
)


def test_in_a_browser_the_data_is_refused_and_a_notebook_plots_and_saves(
    world: World, sign_in: Any, start: Start, browse: Browse
) -> None:
    _, project, dataset = ready_project(world, ["ines"], classification="internal")
    # The notebook is put in /project first (through the gate, as a save from JupyterLab is),
    # and the server stopped, so the browser starts it from the spawn page as a person does.
    hub = sign_in("ines")
    notebook = start(hub, "ines", project)
    cells = [{"cell_type": "code", "metadata": {}, "source": PLOT_CELL,
              "outputs": [], "execution_count": None}]  # fmt: skip
    # The kernel named, so JupyterLab starts it without asking which.
    kernelspec = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    content = {"cells": cells, "metadata": {"kernelspec": kernelspec}, "nbformat": 4,
               "nbformat_minor": 5}  # fmt: skip
    put = notebook.api(
        "PUT", "/contents/project/plot.ipynb", json={"type": "notebook", "content": content}
    )
    assert put.status_code == 201, put.text
    hub.stop("ines", project)
    hub.wait_gone("ines", project, 120)

    session, screenshot = browse(
        "work",
        "ines",
        project,
        f"data/{dataset}/part-0.csv,project/plot.ipynb",
        "jupyterlab-behind-the-gate.png",
    )

    assert session.returncode == 0, session.stdout + session.stderr
    lines = session.stdout.strip().splitlines()
    refused_line = next(line for line in lines if line.startswith("refused: "))
    assert "not shown in the browser" in refused_line and "tre export submit" in refused_line
    assert lines[-1] == "plotted and saved plot.ipynb"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # What JupyterLab saved has the plot: the cell ran behind the gate, and the save went
    # through it (read from the server the browser started, which the `start` fixture stops).
    saved = notebook.api("GET", "/contents/project/plot.ipynb").json()["content"]
    outputs = saved["cells"][0]["outputs"]
    assert any("image/png" in output.get("data", {}) for output in outputs), outputs
