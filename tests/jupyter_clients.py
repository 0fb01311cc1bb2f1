"""Talk to a real JupyterHub and to a notebook server behind its proxy, as a researcher would.

Everything goes through the hub's public URL (the proxy): the hub's REST API under
`/hub/api/`, a named server's Jupyter Server API under `/user/<name>/<server>/api/`. Code runs
inside the notebook through a real kernel over the Jupyter messaging protocol (a websocket),
the same path JupyterLab uses, so "inside the notebook" means inside the pod, as the user.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
import websocket

from provisioner.devcluster.hub import sign_in

__all__ = ["Hub", "HubError", "Notebook", "sign_in"]


class HubError(AssertionError):
    """The hub or the notebook answered something a test did not expect."""


@dataclass
class Hub:
    """The hub's REST API with one API token (an admin's, or a user's own)."""

    url: str  # the proxy's public URL, e.g. http://127.0.0.1:8000
    token: str

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(
            method,
            f"{self.url}/hub/api{path}",
            headers={"Authorization": f"token {self.token}"},
            timeout=30,
            **kwargs,
        )

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._call(method, path, **kwargs)
        if response.status_code >= 400:
            raise HubError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def start(self, user: str, server: str) -> requests.Response:
        """Ask for `user`'s named server; the response says whether the hub accepted."""
        return self._call("POST", f"/users/{quote(user)}/servers/{quote(server)}", json={})

    def stop(self, user: str, server: str) -> None:
        response = self._call("DELETE", f"/users/{quote(user)}/servers/{quote(server)}")
        if response.status_code not in (202, 204):
            raise HubError(f"stopping {user}/{server}: {response.status_code} {response.text}")

    def server(self, user: str, server: str) -> dict[str, Any] | None:
        model = self.api("GET", f"/users/{quote(user)}")
        return (model.get("servers") or {}).get(server)

    def wait_ready(self, user: str, server: str, timeout: float) -> dict[str, Any]:
        """Wait until the hub reports the server ready; fail with the hub's progress events."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.server(user, server)
            if model is not None and model.get("ready"):
                return model
            if model is None or not model.get("pending"):
                break  # not starting (any more): the start failed
            time.sleep(0.5)
        raise HubError(
            f"{user}/{server} not ready after {timeout:.0f}s: {self.progress(user, server)}"
        )

    def wait_gone(self, user: str, server: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server(user, server) is None:
                return
            time.sleep(0.5)
        raise HubError(f"{user}/{server} still there after {timeout:.0f}s")

    def progress(self, user: str, server: str) -> list[str]:
        """The server's progress messages (the spawn page shows the same)."""
        response = self._call(
            "GET", f"/users/{quote(user)}/servers/{quote(server)}/progress", stream=True
        )
        messages = []
        for line in response.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                messages.append(str(event.get("message", "")))
                if event.get("ready") or event.get("failed"):
                    break
        return messages


@dataclass
class Notebook:
    """One running named server, reached through the proxy with a token that may use it."""

    base: str  # e.g. http://127.0.0.1:8000/user/alice/cardio
    token: str

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(
            method,
            f"{self.base}/api{path}",
            headers={"Authorization": f"token {self.token}"},
            timeout=60,
            **kwargs,
        )

    def run(self, code: str, timeout: float = 60) -> str:
        """Run `code` in a fresh Python kernel; return its stdout. A Python error raises
        HubError with the traceback's last line, so tests can assert on it."""
        kernel = self.api("POST", "/kernels", json={"name": "python3"})
        if kernel.status_code != 201:
            raise HubError(f"starting a kernel: {kernel.status_code} {kernel.text}")
        kernel_id = kernel.json()["id"]
        try:
            return self._execute(kernel_id, code, timeout)
        finally:
            self.api("DELETE", f"/kernels/{kernel_id}")

    def _execute(self, kernel_id: str, code: str, timeout: float) -> str:
        ws_url = self.base.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
        conn = websocket.create_connection(
            ws_url, header=[f"Authorization: token {self.token}"], timeout=timeout
        )
        try:
            msg_id = uuid.uuid4().hex
            conn.send(
                json.dumps(
                    {
                        "header": {
                            "msg_id": msg_id,
                            "msg_type": "execute_request",
                            "username": "test",
                            "session": uuid.uuid4().hex,
                            "version": "5.3",
                        },
                        "parent_header": {},
                        "metadata": {},
                        "content": {"code": code, "silent": False, "stop_on_error": True},
                        "channel": "shell",
                    }
                )
            )
            out: list[str] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = json.loads(conn.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    raise HubError(f"{content['ename']}: {content['evalue']}")
                elif kind == "status" and content["execution_state"] == "idle":
                    return "".join(out)
            raise HubError(f"no answer from the kernel within {timeout:.0f}s")
        finally:
            conn.close()
