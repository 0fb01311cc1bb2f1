"""What the hub's sign-in needs from outside its settings, read once at the hub's start: the
development password or the OIDC client secret and the auth state's encryption key (from files
only their owner may read), and the identity provider's endpoints (its OIDC discovery
document).

The I/O edge of `hub_config.config.update_auth`, which stays pure. `auth_mode` runs first, so a
refused combination of settings is reported before any file or network is touched.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr

from hub_config.config import AuthInputs, AuthMode, OidcEndpoints, auth_mode
from provisioner.errors import InvalidInputError, TemporaryError
from provisioner.models.settings import Settings
from provisioner.secret_files import read_secret_file

DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
DISCOVERY_TIMEOUT: Final = 10.0  # seconds; the hub does not start without it
# JupyterHub's CryptKeeper takes 32 bytes; we accept one spelling of them, `openssl rand -hex 32`.
CRYPT_KEY_PATTERN: Final = re.compile(r"[0-9a-fA-F]{64}")


def read_auth_inputs(settings: Settings) -> AuthInputs:
    inputs = _read_sign_in(settings)
    if settings.hub_airlock_token_file is None:
        return inputs
    token = read_secret_file(
        settings.hub_airlock_token_file,
        setting="TRE_HUB_AIRLOCK_TOKEN_FILE",
        owner="the hub and the airlock",
        what="the token the hub and the airlock service share",
        where="'tre dev up' makes one in its state directory; in a cluster, a Secret",
    )
    return dataclasses.replace(inputs, airlock_token=SecretStr(token.decode().strip()))


def _read_sign_in(settings: Settings) -> AuthInputs:
    if auth_mode(settings) is AuthMode.DEVELOPMENT:
        if settings.hub_dev_password_file is None:
            raise InvalidInputError(
                "TRE_HUB_DEV_PASSWORD_FILE: the development sign-in needs a file with its "
                "shared password ('tre dev up' makes one in its state directory)"
            )
        password = read_secret_file(
            settings.hub_dev_password_file,
            setting="TRE_HUB_DEV_PASSWORD_FILE",
            owner="the hub",
            what="the development sign-in's shared password",
            where="'tre dev up' makes one in its state directory",
        )
        return AuthInputs(dev_password=SecretStr(password.decode().strip()))
    assert settings.hub_oidc_client_secret_file is not None  # auth_mode checked it
    assert settings.hub_oidc_issuer is not None
    secret = read_secret_file(
        settings.hub_oidc_client_secret_file,
        setting="TRE_HUB_OIDC_CLIENT_SECRET_FILE",
        owner="the hub",
        what="the hub's OIDC client secret",
        where="in a cluster: the mounted Secret of the hub's pod",
    )
    return AuthInputs(
        oidc_client_secret=SecretStr(secret.decode().strip()),
        oidc_endpoints=oidc_endpoints(settings.hub_oidc_issuer, _fetch_discovery),
        hub_crypt_key=read_crypt_key(settings.hub_crypt_key_file),
    )


def read_crypt_key(path: Path | None) -> SecretStr:
    """The auth state's encryption key: 32 bytes written as 64 hex characters."""
    if path is None:
        raise InvalidInputError(
            "TRE_HUB_CRYPT_KEY_FILE: OIDC sign-in keeps the identity provider's tokens in the "
            "hub's encrypted auth state (to refresh groups); name a file with a key of 64 hex "
            "characters (openssl rand -hex 32)"
        )
    key = read_secret_file(
        path,
        setting="TRE_HUB_CRYPT_KEY_FILE",
        owner="the hub",
        what="the key of the hub's auth state",
        where="in a cluster: the chart's Secret tre-hub-crypt-key, mounted into the hub's pod",
    )
    text = key.decode("ascii", "replace").strip()
    if not CRYPT_KEY_PATTERN.fullmatch(text):
        raise InvalidInputError(
            f"TRE_HUB_CRYPT_KEY_FILE: {path} does not hold 64 hex characters; write a new key "
            "with 'openssl rand -hex 32' (people then sign in again)"
        )
    return SecretStr(text)


def oidc_endpoints(issuer: str, fetch: Any) -> OidcEndpoints:
    """The endpoints of `issuer` from its discovery document (`fetch(url) -> dict`).

    Refused when the document names another issuer (OpenID Connect Discovery 1.0, 4.3: a
    document served for one issuer must not be used for another) or an endpoint that is not
    https, so a hijacked or mistyped URL cannot redirect sign-ins.
    """
    document = fetch(issuer.rstrip("/") + DISCOVERY_PATH)
    if document.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
        raise InvalidInputError(
            f"TRE_HUB_OIDC_ISSUER: the discovery document of {issuer} names issuer "
            f"{document.get('issuer')!r}; set TRE_HUB_OIDC_ISSUER to the exact issuer URL"
        )
    endpoints = {}
    for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint"):
        value = document.get(key)
        if not isinstance(value, str) or not value.startswith("https://"):
            raise InvalidInputError(
                f"TRE_HUB_OIDC_ISSUER: the discovery document of {issuer} has no https "
                f"{key} (got {value!r})"
            )
        endpoints[key] = value
    return OidcEndpoints(**endpoints)


def _fetch_discovery(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=DISCOVERY_TIMEOUT) as response:  # noqa: S310 - https, checked by the setting's pattern
            document: dict[str, Any] = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TemporaryError(
            f"TRE_HUB_OIDC_ISSUER: cannot read {url} ({exc}); the hub does not start without "
            "its identity provider's endpoints"
        ) from exc
    return document
