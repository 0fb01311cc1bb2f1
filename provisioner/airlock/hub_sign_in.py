"""Who is calling the airlock: JupyterHub says (the airlock is the hub's service).

Two ways in, as JupyterHub's own `HubOAuth` offers them, without importing JupyterHub: its
service-auth module pulls in the hub's database layer and HTTP client, some 50 MB of the
airlock's memory (docs/performance.md). What is implemented, and why it is enough:

- **a token** in the `Authorization` header (`token X` or `Bearer X`): a notebook's own token
  or one a person made on the hub's token page. The hub is asked who it belongs to
  (`GET /hub/api/user`) on every request, never from a cache: the hub's answer carries the
  person's groups (an output checker's power), which the hub refreshes from the identity
  provider (`hub_config.oidc`), so a person removed from a group loses it here as soon as the
  hub does. A request that carries a token is judged by the token alone, never by a cookie
  beside it;
- **a browser**: OAuth 2 authorization code with PKCE (S256) and a `state` bound to a signed,
  short-lived cookie (so a sign-in cannot be completed with someone else's code); the hub
  token it yields is kept in a signed, HttpOnly, SameSite=Lax cookie valid under the
  service's prefix only (Secure behind https).

Either way the token must belong to a user (not a service) and the hub must grant it access to
this service (`access:services!service=<name>`, or `access:services`): a token the hub gave
for something else is refused here, as HubOAuth refuses it.

**A notebook's token is told apart by its scopes.** JupyterHub (6.1) gives a server's token
the scopes of `Spawner.server_token_scopes` with `!server` resolved to the server it was made
for, so `GET /hub/api/user` answers for it with `scopes` holding
`access:servers!server=<user>/<server>`; the person's own tokens (the airlock's sign-in, the
hub's token page) hold no scope filtered to one server (`access:servers!user=<user>` at
most). `notebook_project` names that server (one named server per project, named after it).
A token filtered to another user's server, to several servers, or to an unnamed one is
refused outright: what it stands for is unclear, so it gets nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.web import HTTPError, RequestHandler

from provisioner.errors import InvalidInputError, TemporaryError

SESSION_COOKIE: Final = "tre-airlock-session"
STATE_COOKIE: Final = "tre-airlock-oauth-state"
STATE_SECONDS: Final = 600  # a sign-in not finished in ten minutes starts again
SESSION_DAYS: Final = 1  # then the browser signs in again (silently, while signed in to the hub)
HUB_TIMEOUT: Final = 10.0
# How JupyterHub writes a scope that reaches one server only: `<scope>!server=<user>/<server>`.
SERVER_FILTER: Final = "!server="
# What JupyterHub gives a service it knows (JupyterHub's Service.env), and we need.
ENVIRONMENT: Final = (
    "JUPYTERHUB_API_URL",
    "JUPYTERHUB_API_TOKEN",
    "JUPYTERHUB_CLIENT_ID",
    "JUPYTERHUB_SERVICE_NAME",
    "JUPYTERHUB_SERVICE_PREFIX",
    "JUPYTERHUB_OAUTH_CALLBACK_URL",
)


@dataclass(frozen=True)
class HubConfig:
    api_url: str  # the hub's API as the service reaches it, e.g. http://hub:8081/hub/api
    api_token: str  # the service's token; also its OAuth client secret
    client_id: str  # service-<name>
    service_name: str
    prefix: str  # where the proxy serves the service, e.g. /services/airlock/
    callback_url: str  # the OAuth redirect URI registered with the hub
    base_url: str = "/"  # the hub's base URL as browsers reach it

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> HubConfig:
        missing = [name for name in ENVIRONMENT if not env.get(name)]
        if missing:
            raise InvalidInputError(
                f"{', '.join(missing)}: not set; the airlock runs as a JupyterHub service "
                "and signs people in through the hub (docs/airlock.md)"
            )
        prefix = env["JUPYTERHUB_SERVICE_PREFIX"]
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise InvalidInputError(
                f"JUPYTERHUB_SERVICE_PREFIX: {prefix!r} must start and end with '/'"
            )
        return cls(
            api_url=env["JUPYTERHUB_API_URL"].rstrip("/"),
            api_token=env["JUPYTERHUB_API_TOKEN"],
            client_id=env["JUPYTERHUB_CLIENT_ID"],
            service_name=env["JUPYTERHUB_SERVICE_NAME"],
            prefix=prefix,
            callback_url=env["JUPYTERHUB_OAUTH_CALLBACK_URL"],
            base_url=env.get("JUPYTERHUB_BASE_URL") or "/",
        )

    @property
    def access_scopes(self) -> frozenset[str]:
        return frozenset({f"access:services!service={self.service_name}", "access:services"})


def bearer_token(handler: RequestHandler) -> str | None:
    """The token of an `Authorization: token X` or `Bearer X` header, if any."""
    header = handler.request.headers.get("Authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() in ("token", "bearer") and token.strip():
        return token.strip()
    return None


def server_targets(model: Mapping[str, Any]) -> set[str]:
    """Every `<user>/<server>` the token's scopes are filtered to (none for a person's own)."""
    return {
        scope.partition(SERVER_FILTER)[2]
        for scope in model.get("scopes") or []
        if SERVER_FILTER in str(scope)
    }


def bound_unambiguously(model: Mapping[str, Any]) -> bool:
    """A token bound to no server, or to exactly one named server of its own user."""
    targets = server_targets(model)
    if not targets:
        return True
    if len(targets) != 1:
        return False
    user, _, server = next(iter(targets)).partition("/")
    return user == model.get("name") and bool(server) and "/" not in server


def notebook_project(model: Mapping[str, Any]) -> str | None:
    """The project of the notebook server whose token this is; None for a person's own
    token (call only for a model `bound_unambiguously` admits)."""
    targets = server_targets(model)
    if not targets:
        return None
    return next(iter(targets)).partition("/")[2]


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def safe_next(next_url: str | None, prefix: str) -> str:
    """Where to go after signing in: a path of this service only (no open redirect)."""
    if next_url and next_url.startswith(prefix) and "//" not in next_url and "\\" not in next_url:
        return next_url
    return prefix


class HubSignIn:
    """Asks the hub who a token belongs to, and runs the browser's OAuth sign-in."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config

    # --- tokens -------------------------------------------------------------------------------

    async def user_for_token(self, token: str) -> dict[str, Any] | None:
        """The hub's user model for `token` if it is a user's token with access to this
        service; None otherwise. TemporaryError when the hub cannot be asked."""
        model = await self._ask_hub(token)
        return model if model is not None and self._allowed(model) else None

    async def _ask_hub(self, token: str) -> dict[str, Any] | None:
        response = await AsyncHTTPClient().fetch(
            HTTPRequest(
                f"{self.config.api_url}/user",
                headers={"Authorization": f"token {token}"},
                request_timeout=HUB_TIMEOUT,
            ),
            raise_error=False,
        )
        if response.code in (401, 403, 404):
            return None
        if response.code != 200:
            raise TemporaryError(
                f"the hub at {self.config.api_url} could not say who is signed in "
                f"({response.code} {response.reason}); try again"
            )
        loaded: dict[str, Any] = json.loads(response.body)
        return loaded

    def _allowed(self, model: dict[str, Any]) -> bool:
        if model.get("kind", "user") != "user" or not model.get("name"):
            return False
        if not bound_unambiguously(model):
            return False
        return bool(self.config.access_scopes & set(model.get("scopes") or []))

    # --- browsers -------------------------------------------------------------------------------

    async def user_for_cookie(self, handler: RequestHandler) -> dict[str, Any] | None:
        token = handler.get_signed_cookie(SESSION_COOKIE, max_age_days=SESSION_DAYS)
        if not token:
            return None
        return await self.user_for_token(token.decode("ascii", "replace"))

    def login_url(self, handler: RequestHandler, next_url: str) -> str:
        """Start a sign-in: a fresh state and PKCE verifier in a signed cookie; the hub's
        authorization URL to send the browser to."""
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        handler.set_signed_cookie(
            STATE_COOKIE,
            json.dumps({"state": state, "verifier": verifier, "next": next_url}),
            expires_days=None,
            max_age=STATE_SECONDS,
            **self._cookie_options(handler),
        )
        query = urllib.parse.urlencode(
            {
                "client_id": self.config.client_id,
                "redirect_uri": self.config.callback_url,
                "response_type": "code",
                "state": state,
                "code_challenge": pkce_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        return f"{self.config.base_url}hub/api/oauth2/authorize?{query}"

    async def finish_login(self, handler: RequestHandler) -> str:
        """The OAuth callback: check the state against the cookie, exchange the code for a
        token, keep it in the session cookie; where to go next."""
        if error := handler.get_argument("error", None):
            raise HTTPError(400, f"sign-in refused by the hub: {error}")
        code = handler.get_argument("code", None)
        state = handler.get_argument("state", None)
        raw = handler.get_signed_cookie(STATE_COOKIE, max_age_days=1)
        handler.clear_cookie(STATE_COOKIE, path=self.config.prefix)
        if not code or not state or not raw:
            raise HTTPError(400, "sign-in incomplete or expired; open the airlock again")
        started = json.loads(raw)
        if not hmac.compare_digest(str(started.get("state", "")), state):
            raise HTTPError(400, "sign-in state does not match; open the airlock again")
        response = await AsyncHTTPClient().fetch(
            HTTPRequest(
                f"{self.config.api_url}/oauth2/token",
                method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                body=urllib.parse.urlencode(
                    {
                        "client_id": self.config.client_id,
                        "client_secret": self.config.api_token,
                        "grant_type": "authorization_code",
                        "code": code,
                        "redirect_uri": self.config.callback_url,
                        "code_verifier": started["verifier"],
                    }
                ),
                request_timeout=HUB_TIMEOUT,
            ),
            raise_error=False,
        )
        if response.code != 200:
            raise HTTPError(403, f"the hub refused the sign-in ({response.code})")
        token = json.loads(response.body)["access_token"]
        handler.set_signed_cookie(
            SESSION_COOKIE, token, expires_days=SESSION_DAYS, **self._cookie_options(handler)
        )
        return safe_next(started.get("next"), self.config.prefix)

    def _cookie_options(self, handler: RequestHandler) -> dict[str, Any]:
        secure = handler.request.protocol == "https"
        return {"path": self.config.prefix, "httponly": True, "samesite": "Lax", "secure": secure}
