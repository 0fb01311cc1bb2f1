"""The dataset CSI driver's node side on the dev node: k8s-csi-s3 and its registrar as processes.

On a cluster these are a DaemonSet's containers; the dev node has no registry to pull their
image from, so they run as plain processes inside the node's namespaces, started through an
argv prefix the node hands us (``nsenter -t <pid> -n -m --``):

- the node plugin (`s3driver`, CSI name ``ru.yandex.s3.csi``) serving CSI on
  ``<kubelet>/plugins/ru.yandex.s3.csi/csi.sock``; at NodeStage it runs ``rclone mount``
  (read-only, as the PV says) as a daemon, and at NodeUnstage it unmounts it;
- the registrar (`tre-csi-registrar`) on ``<kubelet>/plugins_registry/``, which tells the
  kubelet where the driver's socket is.

Credentials are the node plugin's own, fixed here and nowhere else: a shared credentials file
(mode 0600) written from the credentials given to `start_csi_node`, which should be a
read-only S3 identity. The plugin gets a clean environment (nothing inherited from whoever
runs `tre dev up`) in which only that file can supply keys, and instance metadata is off, so
a failed lookup can neither find other keys nor send a packet off the machine. PVs name only
the platform's endpoint Secret (see `provisioner.planning.storage`).

Both processes are recorded in ``<state>/csi/processes.json`` (`processes`), so a later
`stop_csi_node` finds them by pid and executable. Stopping unmounts every rclone mount left
under the kubelet directory first: the rclone daemons are not our children and would
otherwise keep stale mounts (and their S3 sessions) after the plugin is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from provisioner.devcluster.binaries import CsiBinaries
from provisioner.devcluster.processes import Process, load_processes, save_processes, spawn
from provisioner.errors import DevClusterError
from provisioner.models.types import DatasetCsiDriver

DRIVER = DatasetCsiDriver.K8S_CSI_S3.value
KUBELET_DIR = Path("/var/lib/kubelet")
# The FUSE type of `rclone mount`; the pod's bind mounts of it report the same type.
FUSE_TYPE = "fuse.rclone"
SOCKET_TIMEOUT = 15.0
# Where the driver finds rclone, fusermount3, mount and umount inside the node.
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class CsiNode:
    """The running node side: its sockets as seen inside the node, and its processes."""

    csi_socket: Path
    registration_socket: Path
    processes: list[Process]


def plugin_dir(kubelet_dir: Path = KUBELET_DIR) -> Path:
    return kubelet_dir / "plugins" / DRIVER


def start_csi_node(
    state_dir: Path,
    binaries: CsiBinaries,
    prefix: list[str],
    *,
    node_name: str,
    access_key: str,
    secret_key: str,
    kubelet_dir: Path = KUBELET_DIR,
    register: bool = True,
) -> CsiNode:
    """Start the node plugin (and, with `register`, the registrar) inside `prefix`, or return
    the ones this `state_dir` already runs.

    `prefix` must enter the node's mount namespace (the driver's mounts must be the kubelet's)
    and leave the filesystem paths of `state_dir` and `binaries` as they are on the host.
    Raises DevClusterError, with the end of the plugin's log, when it does not serve its
    socket in time; the processes started so far are stopped first.
    """
    if not binaries.driver.exists() or not binaries.registrar.exists():
        raise DevClusterError(
            f"the CSI binaries are missing ({binaries.driver.parent}); build them with "
            "ensure_csi_binaries first"
        )
    if not access_key or not secret_key:
        raise DevClusterError(
            "start_csi_node: the node plugin needs its own S3 credentials (access_key and "
            "secret_key); without them rclone would mount anonymously"
        )
    home = _private_dir(state_dir / "csi")
    socket = plugin_dir(kubelet_dir) / "csi.sock"
    registration = kubelet_dir / "plugins_registry" / f"{DRIVER}-reg.sock"
    wanted = {"csi-node-plugin", *(["csi-registrar"] if register else [])}
    running = [p for p in load_processes(home / "processes.json") if p.alive()]
    if {p.name for p in running} == wanted:
        return CsiNode(socket, registration, running)  # already up: starting is idempotent
    for process in reversed(running):  # half up (one of the two died): start both afresh
        process.stop()
    credentials = home / "s3-credentials"
    _write_private(
        credentials,
        f"[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n",
    )
    rclone_config = home / "rclone.conf"
    _write_private(rclone_config, "")  # no remotes: the driver names the bucket on the command line
    env = {
        "PATH": _PATH,
        "HOME": str(home),
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "RCLONE_CONFIG": str(rclone_config),
        "RCLONE_CACHE_DIR": str(home / "rclone-cache"),
    }
    _run(prefix, ["mkdir", "-p", str(socket.parent), str(registration.parent)])
    _run(prefix, ["rm", "-f", str(socket)])  # a socket left by a killed run makes Listen fail

    processes: list[Process] = []
    try:
        plugin = spawn(
            "csi-node-plugin",
            [
                *prefix,
                str(binaries.driver),
                f"--endpoint=unix://{socket}",
                f"--nodeid={node_name}",
                "--v=4",
            ],
            home / "node-plugin.log",
            env=env,
            exe=binaries.driver,
        )
        processes.append(plugin)
        save_processes(home / "processes.json", processes)
        _wait_for_socket(prefix, socket, plugin)
        if register:
            registrar = spawn(
                "csi-registrar",
                [
                    *prefix,
                    str(binaries.registrar),
                    f"--driver={DRIVER}",
                    f"--csi-address={socket}",
                    f"--registration-dir={registration.parent}",
                ],
                home / "registrar.log",
                env={"PATH": _PATH},
                exe=binaries.registrar,
            )
            processes.append(registrar)
            save_processes(home / "processes.json", processes)
            _wait_for_socket(prefix, registration, registrar)
    except BaseException:
        for process in reversed(processes):
            _stop_child(process)
        raise
    return CsiNode(socket, registration, processes)


def stop_csi_node(state_dir: Path, prefix: list[str], kubelet_dir: Path = KUBELET_DIR) -> None:
    """Unmount what the driver mounted under `kubelet_dir`, then stop its processes.

    Idempotent. Raises DevClusterError naming the mounts that would not go away.
    """
    for target in reversed(fuse_mounts(prefix, under=kubelet_dir)):
        # A pod's bind mounts come after the staging mount they show: newest first. umount
        # on the staging mount ends its rclone daemon.
        if _run(prefix, ["umount", target], check=False).returncode != 0:
            _run(prefix, ["umount", "--lazy", target], check=False)
    processes_file = state_dir / "csi" / "processes.json"
    for process in reversed(load_processes(processes_file)):
        process.stop()
    processes_file.unlink(missing_ok=True)
    left = fuse_mounts(prefix, under=kubelet_dir)
    if left:
        raise DevClusterError(f"these dataset mounts would not unmount: {left}")


def fuse_mounts(prefix: list[str], *, under: Path) -> list[str]:
    """rclone mounts inside `prefix` at or below `under`, in mount order."""
    # /proc/self/mountinfo of a process inside the namespace, not of us: its mounts are not ours.
    text = _run(prefix, ["cat", "/proc/self/mountinfo"]).stdout
    return mounts_of_type(text, FUSE_TYPE, under)


def mounts_of_type(mountinfo: str, fstype: str, under: Path) -> list[str]:
    """Mount points of `fstype` at or below `under` in a /proc/<pid>/mountinfo text, in order."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        # proc(5): fields before " - " are variable in number; the type is the first after it.
        separator = fields.index("-")
        point = _unescape(fields[4])
        if fields[separator + 1] == fstype and (
            point == str(under) or point.startswith(f"{under}/")
        ):
            found.append(point)
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo octal escapes."""
    for escape, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escape, char)
    return field


def _wait_for_socket(prefix: list[str], socket: Path, process: Process) -> None:
    deadline = time.monotonic() + SOCKET_TIMEOUT
    code: int | None = None
    while time.monotonic() < deadline:
        if _run(prefix, ["test", "-S", str(socket)], check=False).returncode == 0:
            return
        # Not `alive()`: until nsenter has exec'd the binary, the pid's exe is nsenter.
        if (code := process.exit_code()) is not None:
            break
        time.sleep(0.1)
    raise DevClusterError(
        f"{process.name} did not serve {socket} within {SOCKET_TIMEOUT:.0f}s "
        f"({'still running' if code is None else f'exit {code}'}); its log "
        f"{process.log} ends:\n{process.log_tail()}"
    )


def _stop_child(process: Process, timeout: float = 15.0) -> None:
    """Stop a child we just spawned. `Process.stop` trusts only a pid that runs its binary, and
    until nsenter has exec'd it that pid runs nsenter; our own unreaped child is ours either way."""
    # While waitpid says "still running" the pid cannot have been reused: it is our child.
    if not _running_child(process.pid):
        return
    os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _running_child(process.pid):
        if time.monotonic() > deadline:
            os.kill(process.pid, signal.SIGKILL)
            os.waitpid(process.pid, 0)
            return
        time.sleep(0.05)


def _running_child(pid: int) -> bool:
    """Whether our child `pid` still runs; reaps it if it has exited."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # already reaped
        return False
    return done == 0


def _run(
    prefix: list[str], argv: list[str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*prefix, *argv], capture_output=True, text=True, check=False, timeout=30
    )
    if check and result.returncode != 0:
        raise DevClusterError(
            f"{' '.join(argv)} inside the node failed (exit {result.returncode}): "
            f"{result.stderr.strip()}"
        )
    return result


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)  # repair a directory made with a looser mode
    return path


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read, never briefly readable by others."""
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)
