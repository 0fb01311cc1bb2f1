"""A small HTTPS client for the Kubernetes API: what the `tre` command uses.

The official client imports every generated model and API class, and `kubernetes/__init__`
imports `kubernetes.dynamic`, which imports `kubernetes_validate` and `jsonschema` whenever
they are installed: about 1.5 s of CPU before the first request. A command needs none of it:
`Kube` sends JSON and reads JSON. This module reads a kubeconfig the way kubectl does for the
common cases (server, CA, client certificate and key as files or inline data, a bearer token
or token file, `insecure-skip-tls-verify`, `tls-server-name`, `proxy-url` refused) and talks
HTTP/1.1 over one kept-alive connection with the standard library.

A kubeconfig it cannot serve (an `exec` credential plugin, an `auth-provider`, basic auth)
returns None from `load_kubeconfig`: the caller then uses the official client
(`provisioner.kube.client.api_client`), which handles them.

Impersonation headers are sent once per value, so `--as-group` can be repeated
(`Impersonate-Group` once per group, as kubectl does).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import ssl
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from provisioner.errors import PermanentError, TemporaryError

# kubeconfig user fields this client serves; any other credential goes to the official client
_SUPPORTED_USER_FIELDS = frozenset(
    {
        "client-certificate",
        "client-certificate-data",
        "client-key",
        "client-key-data",
        "token",
        "tokenFile",
        "as",
        "as-groups",
    }
)


class HttpError(Exception):
    """A response outside 2xx: the same three fields as the official client's ApiException,
    so one `translate` serves both."""

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.body = body


def extra_header(key: str) -> str:
    """The impersonation header of user extra `key`: percent-encoded, as the API server
    decodes it (a key such as `tre.ucloud.org/via` holds a '/')."""
    return f"Impersonate-Extra-{urllib.parse.quote(key, safe='')}"


class HttpClient:
    """One identity's connection to one API server.

    A plain class, not a dataclass: `dataclasses` imports `inspect`, about 5 ms of every
    `tre` query (docs/performance.md)."""

    def __init__(
        self,
        host: str,
        port: int,
        base_path: str,
        context: ssl.SSLContext | None,  # None: plain HTTP
        server_hostname: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.base_path = base_path
        self.context = context
        self.server_hostname = server_hostname
        self.headers = headers if headers is not None else []
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        # one connection, one request at a time: a thread that shares the client waits its
        # turn
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HttpClient({self.host}:{self.port}{self.base_path})"

    def with_impersonation(
        self, user: str | None, groups: Sequence[str], *, extra: Mapping[str, str] | None = None
    ) -> HttpClient:
        """Act as `user` with `groups` and user `extra` fields (the key percent-encoded in the
        header's name, as the API server reads it)."""
        headers = [h for h in self.headers if not h[0].startswith("Impersonate-")]
        if user:
            headers.append(("Impersonate-User", user))
            headers += [("Impersonate-Group", g) for g in groups]
            headers += [(extra_header(key), value) for key, value in (extra or {}).items()]
        return HttpClient(
            self.host,
            self.port,
            self.base_path,
            self.context,
            self.server_hostname,
            headers,
            self.timeout,
        )

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.context is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            else:
                self._conn = _HTTPSConnection(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    context=self.context,
                    server_hostname=self.server_hostname,
                )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> bytes:
        """The response body of a 2xx answer; HttpError otherwise, TemporaryError when the
        server cannot be reached."""
        with self._lock:
            return self._send(method, path, query, body, content_type)

    def _send(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        body: Any,
        content_type: str,
    ) -> bytes:
        url = self.base_path + path + ("?" + urllib.parse.urlencode(query) if query else "")
        payload = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.putrequest(method, url, skip_accept_encoding=True)
                conn.putheader("Accept", "application/json")
                conn.putheader("User-Agent", "tre")
                if payload is not None:
                    conn.putheader("Content-Type", content_type)
                    conn.putheader("Content-Length", str(len(payload)))
                for name, value in self.headers:
                    conn.putheader(name, value)
                conn.endheaders(payload)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                # The server closed a kept-alive connection before reading this request:
                # send it again once on a new one.
                if reused and attempt == 1:
                    continue
                raise TemporaryError(f"cannot reach the API server ({exc})") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise TemporaryError(f"cannot reach the API server ({exc})") from exc
            if response.will_close:
                self.close()
            if not 200 <= response.status < 300:
                raise HttpError(response.status, response.reason, data)
            return data
        raise AssertionError("unreachable")


class _HTTPSConnection(http.client.HTTPSConnection):
    """HTTPS with an explicit server name for certificate checks (`tls-server-name`)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        context: ssl.SSLContext,
        server_hostname: str | None,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_hostname = server_hostname or host
        self._ssl_context = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._ssl_context.wrap_socket(self.sock, server_hostname=self._server_hostname)


def default_kubeconfig() -> Path | None:
    """$KUBECONFIG (its first file, as `api_client` does), else ~/.kube/config if it exists."""
    env = os.environ.get("KUBECONFIG")
    if env:
        return Path(env.split(os.pathsep)[0])
    home = Path("~/.kube/config").expanduser()
    return home if home.is_file() else None


def load_kubeconfig(path: Path) -> HttpClient | None:
    """An HttpClient for the current context of `path`; None when its credentials need the
    official client (exec plugin, auth-provider, basic auth). PermanentError naming the file
    when it cannot be read or lacks what the current context names."""
    import yaml  # only commands that talk to the API server need it

    def fail(why: str) -> PermanentError:
        return PermanentError(
            f"cannot load Kubernetes credentials ({path}: {why}); set KUBECONFIG, for a local "
            'platform: eval "$(tre dev env)"'
        )

    try:
        # the C loader when libyaml is there: a kubeconfig with inline certificates is large
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        loaded = yaml.load(path.read_bytes(), Loader=loader)  # noqa: S506 - a safe loader
    except (OSError, yaml.YAMLError) as exc:
        raise fail(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise fail("not a kubeconfig")
    config: dict[str, Any] = loaded
    current = config.get("current-context")
    if not current:
        raise fail("no current-context")
    context = _named(config.get("contexts"), current, "context")
    if context is None:
        raise fail(f"context {current!r} not found")
    cluster = _named(config.get("clusters"), context.get("cluster"), "cluster")
    user = _named(config.get("users"), context.get("user"), "user") or {}
    if cluster is None or not cluster.get("server"):
        raise fail(f"cluster {context.get('cluster')!r} not found or without server")
    if set(user) - _SUPPORTED_USER_FIELDS or cluster.get("proxy-url"):
        return None  # exec, auth-provider, username/password, proxy: the official client
    base = path.parent
    url = urllib.parse.urlsplit(str(cluster["server"]))
    headers: list[tuple[str, str]] = []
    token = user.get("token")
    if not token and user.get("tokenFile"):
        try:
            token = _resolve(base, user["tokenFile"]).read_text().strip()
        except OSError as exc:
            raise fail(f"tokenFile: {exc}") from exc
    if token:
        headers.append(("Authorization", f"Bearer {token}"))
    context_ssl = None
    if url.scheme == "https":
        try:
            context_ssl = _ssl_context(base, cluster, user)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise fail(f"TLS settings: {exc}") from exc
    elif url.scheme != "http":
        raise fail(f"server {cluster['server']!r} is not an http(s) URL")
    client = HttpClient(
        host=url.hostname or "localhost",
        port=url.port or (443 if url.scheme == "https" else 80),
        base_path=url.path.rstrip("/"),
        context=context_ssl,
        server_hostname=cluster.get("tls-server-name"),
        headers=headers,
    )
    if user.get("as"):
        client = client.with_impersonation(user["as"], user.get("as-groups") or [])
    return client


def _named(items: Any, name: Any, key: str) -> dict[str, Any] | None:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name:
            value = item.get(key)
            return value if isinstance(value, dict) else {}
    return None


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _ssl_context(base: Path, cluster: dict[str, Any], user: dict[str, Any]) -> ssl.SSLContext:
    # With a CA of its own the cluster is trusted by that CA alone, as kubectl does; loading
    # the system's roots as well would cost 80 ms of every command for nothing.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and host name
    if cluster.get("insecure-skip-tls-verify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        ctx.load_verify_locations(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
    elif cluster.get("certificate-authority"):
        ctx.load_verify_locations(cafile=str(_resolve(base, cluster["certificate-authority"])))
    else:
        ctx.load_default_certs()
    with (
        _pem_file(base, user, "client-certificate") as cert,
        _pem_file(base, user, "client-key") as key,
    ):
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    return ctx


@contextlib.contextmanager
def _pem_file(base: Path, user: dict[str, Any], key: str) -> Iterator[Path | None]:
    """The file of a client certificate or key; inline `-data` is written to a private
    temporary file for as long as `ssl` reads it (it reads only files)."""
    if user.get(f"{key}-data"):
        import tempfile  # only for inline credentials: 2 ms of every command otherwise

        with tempfile.TemporaryDirectory(prefix="tre-") as tmp:
            path = Path(tmp) / "pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(base64.b64decode(user[f"{key}-data"]))
            yield path
    elif user.get(key):
        yield _resolve(base, user[key])
    else:
        yield None
