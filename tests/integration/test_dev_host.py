"""The dev platform does not make its host weaker (security review 3: S2, S3, S18; S12 is in
test_node.py, where a node runs).

Behaviours under test, each by playing the attack on the real component:
- S2, etcd: a local user who knows etcd's port (it is in `ps`) can neither read nor write it:
  plain HTTP, TLS without a client certificate, with a certificate of a CA of their own (made
  with the platform's own tool), and with the platform's *admin* certificate (another CA) are
  all refused (its peer port too), so the ClusterRoleBinding that would make everyone
  cluster-admin is never written; the apiserver's etcd client certificate is the one that
  works, and the platform serves as before;
- S3, the state directory: `tre dev up` and `tre dev down` refuse a state directory owned by
  someone else, with a looser mode, that is a symlink, that holds someone else's file, or that
  lies in a directory others may write, naming the path and the fix; they read nothing in it:
  the pid its planted `processes.json` names is not signalled, the planted CA is not used,
  nothing is written; a missing directory is created with mode 0700 whatever the umask;
- S18, `local-volumes`: PersistentVolumes of its class that name an absolute path, `..`, a
  symlink planted under its root, or another live claim's uid are refused; the paths they name
  survive with their files, and the objects stay; a genuine claim's directory is still made,
  and removed once its volume is released.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from provisioner.devcluster.certs import ETCD_CLIENT, PkiPaths, ensure_pki
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.local_volumes import (
    PROVISIONER,
    PVS,
    STORAGE_CLASS,
    provision_once,
)
from provisioner.devcluster.processes import Process, spawn
from provisioner.devcluster.state_dir import ensure_state_dir
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client

TRE = [sys.executable, "-m", "provisioner.cli.main"]
NOBODY = 65534

# --- S2: etcd -----------------------------------------------------------------------------------

# The review's payload: everyone unauthenticated becomes cluster-admin.
CRB_NAME = "r3-everyone-admin"
CRB = {
    "kind": "ClusterRoleBinding",
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "metadata": {
        "name": CRB_NAME,
        "uid": "5b0c1f3e-0000-4000-8000-000000000001",
        "creationTimestamp": "2026-01-01T00:00:00Z",
    },
    "subjects": [
        {
            "kind": "Group",
            "apiGroup": "rbac.authorization.k8s.io",
            "name": "system:unauthenticated",
        }
    ],
    "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "cluster-admin",
    },
}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _etcd_call(url: str, body: dict[str, str], context: ssl.SSLContext | None) -> bytes:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        return bytes(response.read())


def _attacker_context(cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """TLS as someone without etcd's CA: no server check, optionally a client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


@pytest.fixture(scope="module")
def etcd_port(dev_platform: DevCluster) -> int:
    return int(json.loads((dev_platform.state_dir / "ports.json").read_text())["etcd"])


def test_etcd_refuses_everyone_but_the_apiserver_and_the_platform_works(
    dev_platform: DevCluster, etcd_port: int, tmp_path: Path, admin_api: client.ApiClient
) -> None:
    # The attacker's own CA and certificates, made with the platform's own tool (review S3).
    own = PkiPaths(tmp_path / "attacker-pki")
    ensure_pki(own)
    pki = dev_platform.pki
    https, http = f"https://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{etcd_port}"
    put = {"key": _b64(f"/registry/clusterrolebindings/{CRB_NAME}"), "value": _b64(json.dumps(CRB))}
    attempts: dict[str, tuple[str, ssl.SSLContext | None]] = {
        "plain HTTP (the review's curl)": (http, None),
        "TLS without a client certificate": (https, _attacker_context()),
        "a certificate of the attacker's own CA": (
            https,
            _attacker_context(own.client_cert(ETCD_CLIENT), own.client_key(ETCD_CLIENT)),
        ),
        "the platform's admin certificate (the cluster CA, not etcd's)": (
            https,
            _attacker_context(pki.client_cert("admin"), pki.client_key("admin")),
        ),
    }
    for what, (base, context) in attempts.items():
        for path, body in (("/v3/kv/put", put), ("/v3/kv/range", {"key": _b64("/registry/")})):
            with pytest.raises((OSError, urllib.error.HTTPError)) as refused:
                answer = _etcd_call(base + path, body, context)
                pytest.fail(f"{what}: etcd answered {path}: {answer[:200]!r}")
            print(f"{what} {path}: refused ({refused.value})")

    # The peer port (raft, membership) takes only etcd's own certificate, too.
    peer = int(json.loads((dev_platform.state_dir / "ports.json").read_text())["etcd-peer"])
    for context in (None, attempts["a certificate of the attacker's own CA"][1]):
        scheme = "http" if context is None else "https"
        with pytest.raises(OSError):
            urllib.request.urlopen(
                f"{scheme}://127.0.0.1:{peer}/members", timeout=5, context=context
            )

    # The one client etcd accepts: the apiserver's certificate of etcd's CA.
    apiserver = ssl.create_default_context(cafile=str(pki.etcd_ca_cert))
    apiserver.load_cert_chain(str(pki.client_cert(ETCD_CLIENT)), str(pki.client_key(ETCD_CLIENT)))
    found = json.loads(
        _etcd_call(https + "/v3/kv/range", {"key": _b64("/registry/namespaces/default")}, apiserver)
    )
    assert found["count"] == "1"

    # Nothing was written, anonymous is no admin, and the platform serves as before.
    rbac = client.RbacAuthorizationV1Api(admin_api)
    with pytest.raises(client.ApiException) as missing:
        rbac.read_cluster_role_binding(CRB_NAME)
    assert missing.value.status == 404
    anonymous = urllib.request.Request(
        f"{dev_platform.api_url()}/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
    )
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(anonymous, timeout=5, context=_attacker_context())
    assert denied.value.code in (401, 403)
    assert dev_platform.is_ready()
    assert client.CoreV1Api(admin_api).read_namespace("default").metadata.name == "default"


def test_etcd_files_are_the_owners_alone(dev_platform: DevCluster) -> None:
    """Another local user cannot read the certificate that opens etcd."""
    key = dev_platform.pki.client_key(ETCD_CLIENT)
    result = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "cat", str(key)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "Permission denied" in result.stderr
    assert oct(dev_platform.state_dir.stat().st_mode & 0o777) == "0o700"


# --- S3: the state directory ---------------------------------------------------------------------


@pytest.fixture
def victim() -> Iterator[Process]:
    """A process the attacker wants `tre dev down` to kill (the review used sshd)."""
    sleep = shutil.which("sleep") or "/bin/sleep"
    log = Path(f"/tmp/tre-victim-{uuid.uuid4().hex[:8]}.log")
    proc = spawn("victim", [sleep, "300"], log)
    yield proc
    proc.stop()
    log.unlink(missing_ok=True)


def _plant(state: Path, victim: Process) -> dict[str, bytes]:
    """What the attacker leaves in a state directory: a CA and admin certificate of their own,
    and a processes.json naming the victim. Returns the planted files' contents."""
    state.mkdir(parents=True, exist_ok=True)
    ensure_pki(PkiPaths(state / "pki"), ("10.0.0.1", "10.99.0.1"))
    (state / "processes.json").write_text(json.dumps([victim.to_json()]))
    return {str(p): p.read_bytes() for p in state.rglob("*") if p.is_file()}


def _chown_tree(path: Path, uid: int) -> None:
    for p in [path, *path.rglob("*")]:
        os.chown(p, uid, uid, follow_symlinks=False)


def _tre_dev(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRE, "dev", *args], capture_output=True, text=True, check=False, timeout=120
    )


def _someone_elses(tmp_path: Path, victim: Process) -> tuple[Path, dict[str, bytes]]:
    state = tmp_path / "state"
    planted = _plant(state, victim)
    _chown_tree(state, NOBODY)
    state.chmod(0o700)
    return state, planted


def _loose(tmp_path: Path, victim: Process) -> tuple[Path, dict[str, bytes]]:
    state = tmp_path / "state"
    planted = _plant(state, victim)
    state.chmod(0o777)
    return state, planted


def _symlink(tmp_path: Path, victim: Process) -> tuple[Path, dict[str, bytes]]:
    target = tmp_path / "elsewhere"
    planted = _plant(target, victim)
    target.chmod(0o700)
    (tmp_path / "state").symlink_to(target)
    return tmp_path / "state", planted


def _foreign_file(tmp_path: Path, victim: Process) -> tuple[Path, dict[str, bytes]]:
    state = tmp_path / "state"
    planted = _plant(state, victim)
    state.chmod(0o700)
    os.chown(state / "pki" / "admin.key", NOBODY, NOBODY)
    return state, planted


def _open_parent(tmp_path: Path, victim: Process) -> tuple[Path, dict[str, bytes]]:
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o777)  # writable by all, not sticky: anyone can rename the state away
    state = parent / "state"
    planted = _plant(state, victim)
    state.chmod(0o700)
    return state, planted


@pytest.mark.parametrize(
    ("situation", "said"),
    [
        (_someone_elses, f"is owned by uid {NOBODY}, not by you (uid 0)"),
        (_loose, "has mode 0777, so other users may read or change what it holds"),
        (_symlink, "is a symbolic link"),
        (_foreign_file, f"admin.key, owned by uid {NOBODY}, not by you"),
        (_open_parent, "(mode 0777), where other users could replace it"),
    ],
    ids=["someone-elses", "loose-mode", "symlink", "someone-elses-file", "open-parent"],
)
def test_a_state_directory_that_is_not_yours_alone_is_refused_and_left_untouched(
    tmp_path: Path, victim: Process, situation: object, said: str
) -> None:
    assert callable(situation)
    state, planted = situation(tmp_path, victim)
    for command in (["up", "--no-hub"], ["down"], ["env"]):
        result = _tre_dev(*command, "--state-dir", str(state))
        assert result.returncode == 5, f"tre dev {command}: {result.stdout}{result.stderr}"
        assert f"refusing the state directory {state}: it " in result.stderr
        assert said in result.stderr
        assert "remove it, or choose another directory with --state-dir" in result.stderr
    # Nothing read, signalled, written or deleted.
    assert victim.alive()
    found = {str(p): p.read_bytes() for p in state.resolve().rglob("*") if p.is_file()}
    assert found == {str(Path(k).resolve()): v for k, v in planted.items()}


def test_a_missing_state_directory_is_made_private_whatever_the_umask(tmp_path: Path) -> None:
    state = tmp_path / "new" / "state"
    old = os.umask(0)
    try:
        ensure_state_dir(state)
    finally:
        os.umask(old)
    assert oct(state.stat().st_mode & 0o7777) == "0o700"
    assert state.stat().st_uid == os.geteuid()
    ensure_state_dir(state)  # the platform's own directory again: accepted


# --- S18: local-volumes ------------------------------------------------------------------------

NODE_ROOT = "/var/lib/tre-volumes"


def _hostile_pv(name: str, claim_uid: str, path: str) -> dict[str, object]:
    """A PV of the provisioner's class (its annotation) bound to a claim that does not exist,
    so the PV controller marks it Released: the next round would clean it up."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": "1Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            "claimRef": {"namespace": "default", "name": "none", "uid": claim_uid},
            "local": {"path": path},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["x"]}
                            ]
                        }
                    ]
                }
            },
        },
    }


def _phase(kube: Kube, name: str) -> str | None:
    pv = kube.get(PVS, name)
    return None if pv is None else (pv.get("status") or {}).get("phase")


def _wait_phase(kube: Kube, names: list[str], phase: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_phase(kube, n) == phase for n in names):
            return
        time.sleep(0.5)
    pytest.fail(f"not all {phase}: {[(n, _phase(kube, n)) for n in names]}")


def test_local_volumes_never_touches_a_path_an_object_names(
    dev_platform: DevCluster, namespace: str, tmp_path: Path
) -> None:
    kube = Kube(api_client(dev_platform.kubeconfig), field_manager="test-dev-host")
    root = tmp_path / "node" / "var-lib" / "tre-volumes"
    root.mkdir(parents=True)
    victims = {name: tmp_path / name for name in ("victim-abs", "victim-link")}
    for directory in victims.values():
        directory.mkdir()
        (directory / "important").write_text("keep me")
    # ../../../victim-rel from the root is tmp_path/victim-rel
    victims["victim-rel"] = tmp_path / "victim-rel"
    victims["victim-rel"].mkdir()
    (victims["victim-rel"] / "important").write_text("keep me")
    planted_uid = str(uuid.uuid4())
    (root / planted_uid).symlink_to(victims["victim-link"])

    # A genuine claim of the class: the provisioner makes its directory and volume.
    core = client.CoreV1Api(api_client(dev_platform.kubeconfig))
    claim = core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "project-storage"},
            "spec": {
                "storageClassName": STORAGE_CLASS,
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        },
    )
    live_uid = claim.metadata.uid
    hostile = {
        f"local-r3-abs-{uuid.uuid4().hex[:6]}": (str(victims["victim-abs"]), "/x"),
        f"local-r3-rel-{uuid.uuid4().hex[:6]}": ("../../../victim-rel", "/x"),
        f"local-{planted_uid}": (planted_uid, f"{NODE_ROOT}/{planted_uid}"),
        # another name, a live claim's uid: would take that claim's files with it
        f"local-r3-steal-{uuid.uuid4().hex[:6]}": (live_uid, f"{NODE_ROOT}/{live_uid}"),
    }
    try:
        done = provision_once(kube, root, NODE_ROOT, "tre-node")
        assert f"provisioned {namespace}/project-storage" in done
        assert (root / live_uid).is_dir() and not (root / live_uid).is_symlink()
        (root / live_uid / "notebook.ipynb").write_text("a member's work")

        for name, (uid, path) in hostile.items():
            kube.create(_hostile_pv(name, uid, path))
        _wait_phase(kube, list(hostile), "Released")
        done = provision_once(kube, root, NODE_ROOT, "tre-node")
        refused = [line for line in done if line.startswith("refused to clean up")]
        assert len(refused) == len(hostile), done
        assert not [line for line in done if line.startswith("deleted")], done

        for directory in victims.values():
            assert (directory / "important").read_text() == "keep me"
        assert (root / planted_uid).is_symlink()
        assert (root / live_uid / "notebook.ipynb").read_text() == "a member's work"
        assert all(kube.get(PVS, name) is not None for name in hostile)

        # The genuine volume, once released, is cleaned up as before.
        core.delete_namespaced_persistent_volume_claim("project-storage", namespace)
        _wait_phase(kube, [f"local-{live_uid}"], "Released")
        done = provision_once(kube, root, NODE_ROOT, "tre-node")
        assert f"deleted local-{live_uid}" in done
        assert not (root / live_uid).exists()
        assert all((directory / "important").exists() for directory in victims.values())
    finally:
        for name in [*hostile, f"local-{live_uid}"]:
            kube.delete(PVS, name)
