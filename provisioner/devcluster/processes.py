"""Background processes of the dev platform: start detached, find again by pid file, stop.

A pid alone is not proof: after a reboot the number may belong to another program. We
record the executable path beside the pid and check ``/proc/<pid>/exe`` before trusting it,
so `tre dev down` can never signal a process it did not start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import DevClusterError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# The Popen of every child we spawn, for the life of this process. A Popen dropped while its
# child runs is adopted by the subprocess module (subprocess._active), and the next Popen
# anywhere in this process reaps that child there: our own waitpid would then never see its
# exit code, and a plugin that died at start would look "still running".
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Process:
    name: str
    pid: int
    exe: str
    log: Path

    def alive(self) -> bool:
        try:
            return os.readlink(f"/proc/{self.pid}/exe").removesuffix(" (deleted)") == self.exe
        except OSError:
            return False

    def starting(self) -> bool:
        """Our own child, still running, but not (yet) the binary we recorded: between
        ``nsenter``/``unshare`` and their exec. Only a child can be trusted this way: its pid
        cannot be reused before we reap it."""
        try:
            # WNOWAIT: only look; exit_code() reaps it and reads the status later.
            exited = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return exited is None and not self.alive()

    def exit_code(self, wait: float = 0.0) -> int | None:
        """The exit code if it was our child and has exited, else None. `wait`: seconds to
        give a process that is still exiting (its /proc entry is gone before its parent can
        reap it) to become reapable."""
        deadline = time.monotonic() + wait
        child = _CHILDREN.get(self.pid)
        while True:
            if child is not None:
                if (code := child.poll()) is not None:
                    return code
            else:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    return None
                if pid:
                    return os.waitstatus_to_exitcode(status)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait, then SIGKILL. Not an error if it is already gone."""
        if not self.alive() and not self.starting():
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.exit_code()  # reap it if it is our child, so it does not linger as a zombie
            if not self.alive() and not self.starting():
                return
            time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)
        self.exit_code()

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "pid": self.pid, "exe": self.exe, "log": str(self.log)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Process:
        return cls(
            str(data["name"]), int(str(data["pid"])), str(data["exe"]), Path(str(data["log"]))
        )


def children_of(parent: Process) -> list[Process]:
    """The processes `parent` started that still run, as Processes (each bound to the program
    it runs now, so stopping one later can never hit a stranger that reused its pid).

    For the hub: it starts its managed services (the idle culler) in sessions of their own,
    so stopping the hub alone can leave them behind when its clean-up is cut short.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The fields after the command's parenthesis: state, ppid, ...
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            exe = os.readlink(entry / "exe").removesuffix(" (deleted)")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not ours to read
        if ppid == parent.pid:
            found.append(Process(f"{parent.name} child", int(entry.name), exe, parent.log))
    return found


def stop_with_children(proc: Process) -> None:
    """Stop what `proc` started (children first, each by pid), then `proc`."""
    if proc.alive():
        for child in children_of(proc):
            child.stop()
    proc.stop()


def spawn(
    name: str,
    argv: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    *,
    cwd: Path | None = None,
    exe: str | Path | None = None,
) -> Process:
    """Start argv in its own session (it outlives the CLI), output appended to `log`.

    `exe`: the program the process ends up running, when argv[0] only leads to it (a script
    run by its interpreter, or ``nsenter ... --``/``unshare ... sleep``, which exec the rest in
    the same process). `Process.alive` compares /proc/<pid>/exe with it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    return Process(name, proc.pid, os.path.realpath(exe or argv[0]), log)


def save_processes(path: Path, processes: list[Process]) -> None:
    path.write_text(json.dumps([p.to_json() for p in processes], indent=2))


def load_processes(path: Path) -> list[Process]:
    try:
        return [Process.from_json(d) for d in json.loads(path.read_text())]
    except FileNotFoundError:
        return []


def wait_until_ready(
    procs: Sequence[Process], ready: Callable[[], bool], what: str, timeout: float
) -> None:
    """Poll `ready` until it holds; DevClusterError with the log tail of a process that exits
    meanwhile (and its exit code), or of every process in `procs` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        for proc in procs:
            # A process between nsenter/unshare and its exec is starting, not gone.
            if not proc.alive() and not proc.starting():
                code = proc.exit_code(wait=2.0)
                # No exit code and running now: it was caught mid-exec (between nsenter and
                # the binary, where neither test holds for an instant), not gone.
                if code is None and proc.alive():
                    continue
                raise DevClusterError(
                    f"{proc.name} exited{'' if code is None else f' with code {code}'} "
                    f"while starting; last lines of {proc.log}:\n{proc.log_tail()}"
                )
        time.sleep(0.25)
    tails = "\n".join(f"last lines of {p.log}:\n{p.log_tail()}" for p in procs)
    raise DevClusterError(f"{what} was not ready after {timeout:.0f}s; {tails}")


def wait_ready(proc: Process, ready: Callable[[], bool], timeout: float) -> None:
    """`wait_until_ready` for one process."""
    wait_until_ready([proc], ready, proc.name, timeout)
