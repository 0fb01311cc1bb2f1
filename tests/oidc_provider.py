"""A small OpenID Connect provider for tests, on 127.0.0.1 over TLS, that issues whatever
claims a test sets: the hostile identity provider a hub must survive.

- `/.well-known/openid-configuration`: the discovery document (issuer and https endpoints);
- `/authorize`: no login page; the next account `sign_in_as` queued signs in at once, and the
  browser is sent back to the `redirect_uri` with a one-time code and the hub's state;
- `/token`: the code (with the client's id and secret, HTTP Basic or form) for an access
  token; no refresh tokens, so a token the provider stops accepting means a new sign-in;
- `/userinfo`: the account's claims as they are now (`change` edits them, `disable` makes
  the provider refuse the account's tokens, as an IdP does for a disabled account).

Its certificate is signed by a throwaway CA (`provisioner.devcluster.certs`), which the hub
trusts through SSL_CERT_FILE and the test's browser through `ca_file`: the hub's check that
every endpoint is https stays as it is in production. The server runs in a thread of the
test process with its own event loop; `stop` ends it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from tornado import httpserver, netutil, web

from provisioner.devcluster.certs import PkiPaths, ensure_pki


class _State:
    """What the provider knows, shared by its handlers and the test (under one lock)."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.lock = threading.Lock()
        self.client_id = client_id
        self.client_secret = client_secret
        self.accounts: dict[str, dict[str, Any]] = {}  # sub -> claims
        self.disabled: set[str] = set()
        self.queued: list[str] = []  # subs of the next sign-ins
        self.codes: dict[str, str] = {}  # code -> sub
        self.tokens: dict[str, str] = {}  # access token -> sub
        self.issuer = ""


class _Handler(web.RequestHandler):
    def initialize(self, state: _State) -> None:
        self.state = state

    def check_xsrf_cookie(self) -> None:  # an API, not a form
        return

    def reply(self, document: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(document))


class _Discovery(_Handler):
    def get(self) -> None:
        issuer = self.state.issuer
        self.reply(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "userinfo_endpoint": f"{issuer}/userinfo",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
            }
        )


class _Authorize(_Handler):
    def get(self) -> None:
        if self.get_argument("client_id", "") != self.state.client_id:
            raise web.HTTPError(400, "unknown client_id")
        with self.state.lock:
            if not self.state.queued:
                raise web.HTTPError(400, "no sign-in queued by the test")
            sub = self.state.queued.pop(0)
            code = secrets.token_urlsafe(16)
            self.state.codes[code] = sub
        query = urllib.parse.urlencode({"code": code, "state": self.get_argument("state", "")})
        self.redirect(f"{self.get_argument('redirect_uri')}?{query}")


class _Token(_Handler):
    def post(self) -> None:
        client_id = self.get_argument("client_id", "")
        client_secret = self.get_argument("client_secret", "")
        basic = self.request.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
        if (client_id, client_secret) != (self.state.client_id, self.state.client_secret):
            self.reply({"error": "invalid_client"}, 401)
            return
        with self.state.lock:
            sub = self.state.codes.pop(self.get_argument("code", ""), None)
            if sub is None or self.get_argument("grant_type", "") != "authorization_code":
                self.reply({"error": "invalid_grant"}, 400)
                return
            token = secrets.token_urlsafe(24)
            self.state.tokens[token] = sub
        self.reply({"access_token": token, "token_type": "Bearer", "expires_in": 3600})


class _UserInfo(_Handler):
    def get(self) -> None:
        token = self.request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self.state.lock:
            sub = self.state.tokens.get(token)
            if sub is None or sub in self.state.disabled:
                self.reply({"error": "invalid_token"}, 401)
                return
            claims = dict(self.state.accounts[sub])
        self.reply(claims)


class TestIdentityProvider:
    """The provider at `issuer` (https://127.0.0.1:<free port>) while started."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, client_id: str, client_secret: str) -> None:
        self.pki = PkiPaths(directory / "pki")
        ensure_pki(self.pki)  # a CA and a serving certificate for 127.0.0.1
        self.ca_file = self.pki.ca_cert
        self.client_secret = client_secret
        self._state = _State(client_id, client_secret)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.issuer = ""

    # --- what a test sets -------------------------------------------------------------------

    def sign_in_as(self, claims: dict[str, Any]) -> None:
        """The account (its claims, `sub` included) that signs in at the next /authorize."""
        sub = str(claims["sub"])
        with self._state.lock:
            self._state.accounts[sub] = dict(claims)
            self._state.disabled.discard(sub)
            self._state.queued.append(sub)

    def change(self, sub: str, **claims: Any) -> None:
        """Change an account's claims, as an administrator does in the provider."""
        with self._state.lock:
            self._state.accounts[sub].update(claims)

    def disable(self, sub: str) -> None:
        """Refuse every token of the account from now on."""
        with self._state.lock:
            self._state.disabled.add(sub)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        sockets = netutil.bind_sockets(0, "127.0.0.1")
        port = sockets[0].getsockname()[1]
        self.issuer = self._state.issuer = f"https://127.0.0.1:{port}"
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.pki.serving_cert, self.pki.serving_key)
        routes: list[Any] = [
            (r"/\.well-known/openid-configuration", _Discovery, {"state": self._state}),
            (r"/authorize", _Authorize, {"state": self._state}),
            (r"/token", _Token, {"state": self._state}),
            (r"/userinfo", _UserInfo, {"state": self._state}),
        ]
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            server = httpserver.HTTPServer(web.Application(routes), ssl_options=context)
            server.add_sockets(sockets)
            self._loop = loop
            ready.set()
            loop.run_forever()
            server.stop()
            loop.run_until_complete(server.close_all_connections())
            loop.close()

        self._thread = threading.Thread(target=serve, name="test-idp", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
