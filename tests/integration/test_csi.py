"""The dataset CSI driver, driven over its real CSI socket as the kubelet drives it.

The node plugin (k8s-csi-s3 built from its Go module, mounting with rclone) runs through
`provisioner.devcluster.csi` inside a private mount namespace this module creates
(`unshare -m --propagation private`), against a real SeaweedFS with a real bucket. The
requests carry exactly what `provisioner.planning.storage` plans for the PV (volume handle,
volume attributes, read-only flag, mount options, the endpoint Secret's data). Behaviours:

- the plugin is ru.yandex.s3.csi and names its node; the registrar tells the kubelet the
  plugin's socket;
- after NodeStage + NodePublish the dataset's files are at the target with their content,
  readable by the notebook user (uid 1000, gid 100), and only the dataset's prefix is there;
- writing, creating or deleting fails with EROFS (read-only file system), and S3 is unchanged;
- the node plugin reads S3 with its own read-only key (writes refused by S3 itself); the stage
  secret the PV names holds no key;
- NodeUnpublish + NodeUnstage leave no mount; stopping the node side leaves none either, even
  with a volume still published.

Root is required (mount namespaces, FUSE): a missing prerequisite fails, never skips.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import botocore.exceptions
import grpc  # type: ignore[import-untyped]  # ships no type hints
import pytest
from grpc_tools import protoc  # type: ignore[import-untyped]  # ships no type hints

from provisioner.devcluster.binaries import CsiBinaries, ensure_csi_binaries
from provisioner.devcluster.csi import (
    DRIVER,
    CsiNode,
    fuse_mounts,
    start_csi_node,
    stop_csi_node,
)
from provisioner.devcluster.processes import load_processes
from provisioner.devcluster.s3server import (
    S3Endpoint,
    dataset_reader_credentials,
    start_s3,
    stop_s3,
)
from provisioner.errors import DevClusterError
from provisioner.models.resources import DatasetSource, S3Source, WorkspaceDataset
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier, DatasetCsiDriver
from provisioner.planning.storage import dataset_driver_objects, dataset_persistent_volume

PREFIX = "cohort/2026/"
FILES = {"readme.txt": b"synthetic cohort\n", "visits/2026-01.csv": b"id,visit\n1,2026-01-03\n"}
OUTSIDE = "other/secret.csv"  # in the bucket, outside the dataset's prefix
NOTEBOOK = ["setpriv", "--reuid=1000", "--regid=100", "--clear-groups", "--"]


def _require_prerequisites() -> None:
    missing = [
        tool
        for tool in ("unshare", "nsenter", "setpriv", "rclone", "fusermount3")
        if not shutil.which(tool)
    ]
    if os.geteuid() != 0:
        pytest.fail("test_csi.py needs root (mount namespaces, FUSE mounts); run it as root")
    if missing or not Path("/dev/fuse").exists():
        pytest.fail(
            f"test_csi.py needs {missing or ''} {'' if Path('/dev/fuse').exists() else '/dev/fuse'}"
            ": install the Debian packages rclone and fuse3 (see docs/development.md)"
        )


@pytest.fixture(scope="module")
def binaries() -> CsiBinaries:
    _require_prerequisites()
    return ensure_csi_binaries(lambda message: print(message, file=sys.stderr))


@pytest.fixture(scope="module")
def csi_pb(binaries: CsiBinaries, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Python stubs of the CSI spec the driver was built against, generated for this run."""
    return _stubs(binaries.proto, "csi", tmp_path_factory.mktemp("csi-stubs"))


@pytest.fixture(scope="module")
def registration_pb(binaries: CsiBinaries, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _stubs(
        binaries.registration_proto, "pluginregistration", tmp_path_factory.mktemp("reg-stubs")
    )


def _stubs(proto: Path, name: str, out: Path) -> tuple[ModuleType, ModuleType]:
    shutil.copy(proto, out / f"{name}.proto")
    include = str(Path(protoc.__file__).parent / "_proto")
    status = protoc.main(
        [
            "protoc",
            f"-I{out}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"{out}/{name}.proto",
        ]
    )
    assert status == 0, f"protoc could not compile {proto}"
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
def s3_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("s3")


@pytest.fixture(scope="module")
def s3(s3_state: Path) -> Iterator[S3Endpoint]:
    endpoint = start_s3(s3_state)
    try:
        yield endpoint
    finally:
        stop_s3(s3_state)


@pytest.fixture(scope="module")
def reader(s3: S3Endpoint, s3_state: Path) -> S3Endpoint:
    """The same server with the node plugin's own key, which may only read and list."""
    access_key, secret_key = dataset_reader_credentials(s3_state)
    return dataclasses.replace(s3, access_key=access_key, secret_key=secret_key)


@pytest.fixture(scope="module")
def dataset_bucket(s3: S3Endpoint) -> str:
    bucket = f"csi-{uuid.uuid4().hex[:12]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for key, body in FILES.items():
        client.put_object(Bucket=bucket, Key=PREFIX + key, Body=body)
    client.put_object(Bucket=bucket, Key=OUTSIDE, Body=b"not part of the dataset\n")
    return bucket


@pytest.fixture(scope="module")
def namespace() -> Iterator[list[str]]:
    """An argv prefix that runs a command inside a private mount namespace made for this test."""
    _require_prerequisites()
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sleep", "infinity"],
        stdin=subprocess.DEVNULL,
    )
    try:
        host_ns = os.readlink("/proc/self/ns/mnt")
        for _ in range(100):  # until unshare has switched namespace and exec'd sleep
            if os.readlink(f"/proc/{holder.pid}/ns/mnt") != host_ns:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        else:
            pytest.fail("unshare did not create a mount namespace")
        yield ["nsenter", f"--target={holder.pid}", "--mount", "--"]
    finally:
        holder.terminate()
        holder.wait(timeout=10)


@pytest.fixture(scope="module")
def settings(s3: S3Endpoint) -> Settings:
    return Settings(
        dataset_csi_driver=DatasetCsiDriver.K8S_CSI_S3,
        s3_endpoint_url=s3.url,
        s3_region=s3.region,
    )


@pytest.fixture(scope="module")
def kubelet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kubelet")


@pytest.fixture(scope="module")
def csi_node(
    binaries: CsiBinaries,
    namespace: list[str],
    reader: S3Endpoint,
    kubelet_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CsiNode]:
    state = tmp_path_factory.mktemp("csi-state")
    node = _start(state, binaries, namespace, reader, kubelet_dir, "csi-test-node", register=True)
    try:
        yield node
    finally:
        stop_csi_node(state, namespace, kubelet_dir)
        assert fuse_mounts(namespace, under=kubelet_dir) == []


@pytest.fixture(scope="module")
def planned_volume(dataset_bucket: str, settings: Settings) -> dict[str, Any]:
    dataset = WorkspaceDataset(
        name="cohort",
        manifest_sha256="d" * 64,
        classification=ClassificationTier.CONFIDENTIAL,
        source=DatasetSource(s3=S3Source(bucket=dataset_bucket, prefix=PREFIX)),
    )
    return dataset_persistent_volume("csi-test", dataset, settings)


@pytest.fixture
def node_client(csi_node: CsiNode, namespace: list[str], csi_pb: Any) -> Iterator[Any]:
    """A CSI Node client on the plugin's socket (reached through /proc/<pid>/root: the socket's
    directory is the same in both namespaces, but connecting from inside keeps that honest)."""
    pid = _pid_of(namespace)
    channel = grpc.insecure_channel(f"unix:///proc/{pid}/root{csi_node.csi_socket}")
    try:
        yield channel
    finally:
        channel.close()


def _start(
    state: Path,
    binaries: CsiBinaries,
    namespace: list[str],
    s3: S3Endpoint,
    kubelet: Path,
    node_name: str,
    *,
    register: bool,
) -> CsiNode:
    return start_csi_node(
        state,
        binaries,
        namespace,
        node_name=node_name,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        kubelet_dir=kubelet,
        register=register,
    )


def _pid_of(namespace: list[str]) -> str:
    return namespace[1].removeprefix("--target=")


def _inside(namespace: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*namespace, *argv], capture_output=True, text=True, timeout=60, check=False
    )


def _stage_and_publish_requests(
    pb: ModuleType, volume: dict[str, Any], settings: Settings, staging: Path, target: Path
) -> tuple[Any, Any, Any, Any]:
    """The kubelet's four requests for this PV, built from the PV and the Secret as planned."""
    csi = volume["spec"]["csi"]
    _, secret = dataset_driver_objects(settings)
    assert csi["nodeStageSecretRef"] == {
        "name": secret["metadata"]["name"],
        "namespace": secret["metadata"]["namespace"],
    }
    secrets = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    capability = pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(mount_flags=volume["spec"].get("mountOptions", [])),
        access_mode=pb.VolumeCapability.AccessMode(
            mode=pb.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY  # ReadOnlyMany
        ),
    )
    common = {"volume_id": csi["volumeHandle"], "volume_capability": capability}
    stage = pb.NodeStageVolumeRequest(
        **common,
        staging_target_path=str(staging),
        secrets=secrets,
        volume_context=csi["volumeAttributes"],
    )
    publish = pb.NodePublishVolumeRequest(
        **common,
        staging_target_path=str(staging),
        target_path=str(target),
        readonly=csi["readOnly"],
        volume_context=csi["volumeAttributes"],
    )
    unpublish = pb.NodeUnpublishVolumeRequest(
        volume_id=csi["volumeHandle"], target_path=str(target)
    )
    unstage = pb.NodeUnstageVolumeRequest(
        volume_id=csi["volumeHandle"], staging_target_path=str(staging)
    )
    return stage, publish, unpublish, unstage


# --- tests ------------------------------------------------------------------------------------


def test_starting_again_returns_the_running_node_side(
    csi_node: CsiNode, binaries: CsiBinaries, namespace: list[str], reader: S3Endpoint
) -> None:
    plugin = csi_node.processes[0]
    state = plugin.log.parent.parent  # <state>/csi/node-plugin.log
    again = _start(
        state,
        binaries,
        namespace,
        reader,
        csi_node.csi_socket.parent.parent.parent,
        "csi-test-node",
        register=True,
    )
    assert [p.pid for p in again.processes] == [p.pid for p in csi_node.processes]
    assert plugin.alive()


def test_a_plugin_that_dies_at_start_fails_with_its_log_and_leaves_nothing_running(
    binaries: CsiBinaries, namespace: list[str], reader: S3Endpoint, tmp_path: Path
) -> None:
    broken = dataclasses.replace(binaries, driver=Path(shutil.which("false") or "/bin/false"))
    with pytest.raises(DevClusterError, match=r"csi-node-plugin did not serve .* \(exit 1\)"):
        _start(tmp_path, broken, namespace, reader, tmp_path / "kubelet", "n", register=True)
    (plugin,) = load_processes(tmp_path / "csi" / "processes.json")
    assert not Path(f"/proc/{plugin.pid}").exists()


def test_the_node_plugins_own_key_reads_but_cannot_write(
    reader: S3Endpoint, dataset_bucket: str
) -> None:
    client = reader.client()
    body = client.get_object(Bucket=dataset_bucket, Key=PREFIX + "readme.txt")["Body"].read()
    assert body == FILES["readme.txt"]
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        client.put_object(Bucket=dataset_bucket, Key=PREFIX + "planted.txt", Body=b"x")


def test_the_plugin_is_the_configured_driver_and_is_registered_with_the_kubelet(
    node_client: Any, csi_pb: Any, registration_pb: Any, csi_node: CsiNode, namespace: list[str]
) -> None:
    pb, rpc = csi_pb
    info = rpc.IdentityStub(node_client).GetPluginInfo(pb.GetPluginInfoRequest())
    assert info.name == DRIVER == DatasetCsiDriver.K8S_CSI_S3.value
    assert rpc.NodeStub(node_client).NodeGetInfo(pb.NodeGetInfoRequest()).node_id == "csi-test-node"

    reg_pb, reg_rpc = registration_pb
    pid = _pid_of(namespace)
    with grpc.insecure_channel(f"unix:///proc/{pid}/root{csi_node.registration_socket}") as channel:
        plugin = reg_rpc.RegistrationStub(channel).GetInfo(reg_pb.InfoRequest())
    assert (plugin.type, plugin.name, plugin.endpoint) == (
        "CSIPlugin",
        DRIVER,
        str(csi_node.csi_socket),
    )
    assert list(plugin.supported_versions) == ["1.0.0"]


def test_a_published_dataset_is_readable_by_the_notebook_user_and_read_only(
    node_client: Any,
    csi_pb: Any,
    planned_volume: dict[str, Any],
    settings: Settings,
    namespace: list[str],
    kubelet_dir: Path,
    s3: S3Endpoint,
    dataset_bucket: str,
) -> None:
    pb, rpc = csi_pb
    node = rpc.NodeStub(node_client)
    pod = kubelet_dir / "pods" / "a1b2" / "volumes" / "kubernetes.io~csi" / "cohort"
    staging = (
        kubelet_dir / "plugins" / "kubernetes.io" / "csi" / DRIVER / "0123abcd" / "globalmount"
    )
    target = pod / "mount"
    stage, publish, unpublish, unstage = _stage_and_publish_requests(
        pb, planned_volume, settings, staging, target
    )
    # The Secret the PV names holds configuration only: the keys come from the node plugin.
    assert set(stage.secrets) == {"endpoint", "region"}

    node.NodeStageVolume(stage, timeout=60)
    node.NodePublishVolume(publish, timeout=60)
    try:
        assert fuse_mounts(namespace, under=kubelet_dir) == [str(staging), str(target)]
        for name, body in FILES.items():
            # From inside the target, as the container sees it: the kubelet's directories
            # above it are root's alone (0750), as on a real node.
            read = _inside(
                namespace,
                "sh",
                "-c",
                'cd "$0" && shift 0 && exec "$@"',
                str(target),
                *NOTEBOOK,
                "cat",
                name,
            )
            assert read.returncode == 0, read.stderr
            assert read.stdout.encode() == body
        listing = _inside(namespace, "ls", "-A", str(target))
        assert sorted(listing.stdout.split()) == ["readme.txt", "visits"]  # the prefix only

        for attempt in (
            ["sh", "-c", f"echo changed > {target / 'readme.txt'}"],
            ["sh", "-c", f"echo new > {target / 'new.txt'}"],
            ["rm", str(target / "visits" / "2026-01.csv")],
            ["mkdir", str(target / "scratch")],
        ):
            write = _inside(namespace, *attempt)
            assert write.returncode != 0, attempt
            assert "Read-only file system" in write.stderr, (attempt, write.stderr)
        client = s3.client()
        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=dataset_bucket)["Contents"])
        assert keys == sorted([OUTSIDE, *(PREFIX + k for k in FILES)])
        assert (
            client.get_object(Bucket=dataset_bucket, Key=PREFIX + "readme.txt")["Body"].read()
            == FILES["readme.txt"]
        )
    finally:
        node.NodeUnpublishVolume(unpublish, timeout=60)
        node.NodeUnstageVolume(unstage, timeout=60)
    assert fuse_mounts(namespace, under=kubelet_dir) == []
    assert _inside(namespace, "ls", "-A", str(target)).stdout == ""


def test_stopping_the_node_side_unmounts_a_volume_still_published(
    binaries: CsiBinaries,
    csi_pb: Any,
    planned_volume: dict[str, Any],
    settings: Settings,
    namespace: list[str],
    reader: S3Endpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A second node side of its own (own kubelet dir and state), stopped mid-publication."""
    pb, rpc = csi_pb
    kubelet = tmp_path_factory.mktemp("kubelet-stop")
    state = tmp_path_factory.mktemp("csi-stop")
    node_side = _start(state, binaries, namespace, reader, kubelet, "csi-stop-node", register=False)
    try:
        staging = kubelet / "plugins" / "kubernetes.io" / "csi" / DRIVER / "f00d" / "globalmount"
        target = kubelet / "pods" / "c3d4" / "volumes" / "kubernetes.io~csi" / "cohort" / "mount"
        stage, publish, _, _ = _stage_and_publish_requests(
            pb, planned_volume, settings, staging, target
        )
        with grpc.insecure_channel(
            f"unix:///proc/{_pid_of(namespace)}/root{node_side.csi_socket}"
        ) as channel:
            node = rpc.NodeStub(channel)
            node.NodeStageVolume(stage, timeout=60)
            node.NodePublishVolume(publish, timeout=60)
        assert len(fuse_mounts(namespace, under=kubelet)) == 2
    finally:
        stop_csi_node(state, namespace, kubelet)
    assert fuse_mounts(namespace, under=kubelet) == []
    assert not any(p.alive() for p in node_side.processes)
