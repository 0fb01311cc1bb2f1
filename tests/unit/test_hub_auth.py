"""The hub's sign-in, URLs and idle culler (hub_config.config, hub_config.auth_inputs).

Behaviours under test:
- auth_mode: the development sign-in only when asked for, and refused beside any OIDC setting
  (each named); no sign-in configured at all is refused (JupyterHub's default would sign in
  the host's Unix accounts); an incomplete OIDC configuration names what is missing;
- update_auth, OIDC: the platform's GenericOAuthenticator (hub_config.oidc) with the
  discovered endpoints, the username (default `sub`) and groups claims, only the allowed
  group, no allow_all or existing users, the platform's user name pattern, auth state
  encrypted with the configured key and refreshed before every start and every
  `hub_auth_refresh_seconds`; every key a real configurable trait of the installed
  OAuthenticator; OIDC without a crypt key file of 64 hex characters is refused; a start
  needs the allowed group among the person's (just refreshed) hub groups;
- update_auth, development: SharedPasswordAuthenticator with the password, refused without
  one or with one JupyterHub would refuse (under 8 characters);
- update_urls: bind URLs, the connect URL (the zero-to-jupyterhub FQDN by default, a setting
  otherwise), and a proxy started beside the hub only when its API URL is set;
- update_culler: jupyterhub-idle-culler as a hub-managed service whose role has exactly the
  four scopes it documents;
- oidc_endpoints refuses a discovery document for another issuer or with a non-https
  endpoint; read_auth_inputs refuses a secret file others may read.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.app import JupyterHub
from jupyterhub.authenticators.shared import SharedPasswordAuthenticator
from jupyterhub.crypto import CryptKeeper
from jupyterhub.proxy import ConfigurableHTTPProxy
from pydantic import SecretStr
from tornado.web import HTTPError
from traitlets.config import Config

from hub_config import config as hub
from hub_config.auth_inputs import oidc_endpoints, read_auth_inputs, read_crypt_key
from hub_config.oidc import PlatformOAuthenticator
from provisioner.errors import InvalidInputError
from provisioner.models.rules import USERNAME_PATTERN
from provisioner.models.settings import Settings

ISSUER = "https://login.example.org/realms/tre"
ENDPOINTS = hub.OidcEndpoints(
    authorization_endpoint=f"{ISSUER}/protocol/openid-connect/auth",
    token_endpoint=f"{ISSUER}/protocol/openid-connect/token",
    userinfo_endpoint=f"{ISSUER}/protocol/openid-connect/userinfo",
)
CRYPT_KEY = "0f" * 32
OIDC_AUTH = hub.AuthInputs(
    oidc_client_secret=SecretStr("s3cret"),
    oidc_endpoints=ENDPOINTS,
    hub_crypt_key=SecretStr(CRYPT_KEY),
)
DEV_AUTH = hub.AuthInputs(dev_password=SecretStr("a-long-password"))


@pytest.fixture
def oidc_settings(tmp_path: Path) -> Settings:
    return Settings(
        hub_oidc_issuer=ISSUER,
        hub_oidc_client_id="tre-hub",
        hub_oidc_client_secret_file=tmp_path / "secret",
        hub_oidc_callback_url="https://hub.tre.example.org/hub/oauth_callback",
        hub_oidc_allowed_group="tre-researchers",
    )


# --- auth_mode ----------------------------------------------------------------------------------


def test_development_sign_in_only_when_asked_for() -> None:
    assert hub.auth_mode(Settings(hub_dev_authenticator=True)) is hub.AuthMode.DEVELOPMENT


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hub_oidc_issuer", ISSUER),
        ("hub_oidc_client_id", "tre-hub"),
        ("hub_oidc_client_secret_file", Path("/run/secret")),
        ("hub_oidc_callback_url", "https://hub.example.org/hub/oauth_callback"),
        ("hub_oidc_username_claim", "email"),
        ("hub_oidc_groups_claim", "roles"),
        ("hub_oidc_scopes", ["openid"]),
        ("hub_oidc_allowed_group", "tre-researchers"),
    ],
)
def test_development_sign_in_is_refused_beside_any_oidc_setting(field: str, value: Any) -> None:
    settings = Settings(hub_dev_authenticator=True, **{field: value})
    with pytest.raises(InvalidInputError) as refused:
        hub.auth_mode(settings)
    assert str(refused.value) == (
        "TRE_HUB_DEV_AUTHENTICATOR: the development sign-in is refused because OIDC settings "
        f"are present ({'TRE_' + field.upper()}); a deployment signs in through OIDC only: "
        "unset TRE_HUB_DEV_AUTHENTICATOR, or remove the OIDC settings on a development machine"
    )


def test_no_sign_in_at_all_is_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"^no sign-in configured: set TRE_HUB_OIDC_"):
        hub.auth_mode(Settings())


def test_incomplete_oidc_names_what_is_missing() -> None:
    with pytest.raises(InvalidInputError) as refused:
        hub.auth_mode(Settings(hub_oidc_issuer=ISSUER, hub_oidc_client_id="tre-hub"))
    assert str(refused.value).startswith(
        "OIDC sign-in is incomplete: set TRE_HUB_OIDC_CLIENT_SECRET_FILE, "
        "TRE_HUB_OIDC_CALLBACK_URL, TRE_HUB_OIDC_ALLOWED_GROUP"
    )


def test_complete_oidc_settings_mean_oidc(oidc_settings: Settings) -> None:
    assert hub.auth_mode(oidc_settings) is hub.AuthMode.OIDC


# --- update_auth --------------------------------------------------------------------------------


def test_oidc_signs_in_only_the_allowed_group(oidc_settings: Settings) -> None:
    c = Config()
    hub.update_auth(c, oidc_settings, OIDC_AUTH)

    assert c.JupyterHub.authenticator_class == "hub_config.oidc.PlatformOAuthenticator"
    assert dict(c.GenericOAuthenticator) == {
        "login_service": "your institution",
        "client_id": "tre-hub",
        "client_secret": "s3cret",
        "oauth_callback_url": "https://hub.tre.example.org/hub/oauth_callback",
        "authorize_url": ENDPOINTS.authorization_endpoint,
        "token_url": ENDPOINTS.token_endpoint,
        "userdata_url": ENDPOINTS.userinfo_endpoint,
        "scope": ["openid", "profile", "email", "groups"],
        "username_claim": "sub",
        "enable_auth_state": True,
        "refresh_pre_spawn": True,
        "auth_refresh_age": 300,
        "manage_groups": True,
        "auth_state_groups_key": "oauth_user.groups",
        "allowed_groups": {"tre-researchers"},
        "allow_all": False,
        "allow_existing_users": False,
    }
    assert dict(c.Authenticator) == {"username_pattern": USERNAME_PATTERN}
    assert c.CryptKeeper["keys"] == [CRYPT_KEY]
    traits = set(PlatformOAuthenticator.class_trait_names(config=True))
    assert set(c.GenericOAuthenticator) - traits == set()
    # The real authenticator (the class JupyterHub loads) accepts the values, its parent's
    # section included (its validators run on load); so does JupyterHub's key keeper.
    authenticator = PlatformOAuthenticator(config=c)
    assert authenticator.allowed_groups == {"tre-researchers"}
    assert authenticator.enable_auth_state is True
    assert authenticator.validate_username("lena.lead")
    assert not authenticator.validate_username("Lena Lead")
    assert CryptKeeper(config=c).keys == [bytes.fromhex(CRYPT_KEY)]


def test_with_oidc_a_start_needs_the_allowed_group(oidc_settings: Settings) -> None:
    c = Config()
    hub.update_auth(c, oidc_settings, OIDC_AUTH)
    hook = c.KubeSpawner.pre_spawn_hook
    assert hook == hub.AllowedGroupOnly("tre-researchers")

    def spawner(*groups: str) -> SimpleNamespace:
        user = SimpleNamespace(name="lea", groups=[SimpleNamespace(name=g) for g in groups])
        return SimpleNamespace(user=user)

    hook(spawner("tre-researchers", "tre:output-checkers"))
    for groups in [(), ("tre:output-checkers",)]:
        with pytest.raises(HTTPError) as refused:
            hook(spawner(*groups))
        assert refused.value.status_code == 403
        assert refused.value.args == (
            "lea is no longer in the group tre-researchers that may use the platform (the "
            "identity provider says so); sign in again, or ask your administrator",
        )


def test_oidc_without_its_secret_and_endpoints_is_refused(oidc_settings: Settings) -> None:
    with pytest.raises(InvalidInputError, match="must be read before the hub is configured"):
        hub.update_auth(Config(), oidc_settings, hub.AuthInputs())


def test_development_sign_in_uses_the_shared_password() -> None:
    c = Config()
    hub.update_auth(c, Settings(hub_dev_authenticator=True), DEV_AUTH)

    assert c.JupyterHub.authenticator_class == "shared-password"
    assert dict(c.SharedPasswordAuthenticator) == {
        "user_password": "a-long-password",
        "allow_all": True,
    }
    assert dict(c.Authenticator) == {"username_pattern": USERNAME_PATTERN}
    authenticator = SharedPasswordAuthenticator(config=c)
    assert authenticator.user_password == "a-long-password"
    assert not authenticator.validate_username("lena lead")


@pytest.mark.parametrize("password", [None, "short"])
def test_development_sign_in_without_a_usable_password_is_refused(password: str | None) -> None:
    inputs = hub.AuthInputs(dev_password=SecretStr(password) if password else None)
    with pytest.raises(InvalidInputError, match="at least 8 characters"):
        hub.update_auth(Config(), Settings(hub_dev_authenticator=True), inputs)


# --- update_urls, update_culler -----------------------------------------------------------------


def test_urls_default_to_a_hub_pod_reached_by_its_service_fqdn() -> None:
    c = Config()
    hub.update_urls(c, Settings(hub_namespace="jhub"))

    assert c.JupyterHub.bind_url == "http://:8000"
    assert c.JupyterHub.hub_bind_url == "http://:8081"
    assert c.JupyterHub.hub_connect_url == "http://hub.jhub.svc.cluster.local:8081"
    assert "ConfigurableHTTPProxy" not in c  # the hub starts its own proxy


def test_urls_for_a_hub_on_a_node_with_its_own_proxy() -> None:
    c = Config()
    hub.update_urls(
        c,
        Settings(
            hub_bind_url="http://10.99.0.1:8000",
            hub_api_bind_url="http://10.99.0.1:8081",
            hub_connect_url="http://10.99.0.1:8081",
            hub_proxy_api_url="http://10.99.0.1:8001",
        ),
    )

    assert c.JupyterHub.bind_url == "http://10.99.0.1:8000"
    assert c.JupyterHub.hub_bind_url == "http://10.99.0.1:8081"
    assert c.JupyterHub.hub_connect_url == "http://10.99.0.1:8081"
    assert dict(c.ConfigurableHTTPProxy) == {
        "should_start": False,
        "api_url": "http://10.99.0.1:8001",
    }
    assert set(c.ConfigurableHTTPProxy) <= set(ConfigurableHTTPProxy.class_trait_names(config=True))
    assert set(c.JupyterHub) <= set(JupyterHub.class_trait_names(config=True))


def test_the_idle_culler_is_a_hub_service_with_the_minimal_scopes() -> None:
    c = Config()
    hub.update_culler(
        c,
        Settings(hub_idle_timeout_seconds=1800, hub_cull_every_seconds=120),
        python="/venv/bin/python",
    )

    assert c.JupyterHub.services == [
        {
            "name": "idle-culler",
            "command": [
                "/venv/bin/python",
                "-m",
                "jupyterhub_idle_culler",
                "--timeout=1800",
                "--cull-every=120",
                "--url=http://127.0.0.1:8081/hub/api",
            ],
        }
    ]
    assert c.JupyterHub.load_roles == [
        {
            "name": "idle-culler",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        }
    ]


def test_the_culler_calls_the_hub_where_it_binds_never_through_the_hubs_service() -> None:
    # in a pod: every interface, so the loopback (a pod's own Service needs hairpin traffic)
    assert hub.culler_api_url(Settings()) == "http://127.0.0.1:8081/hub/api"
    # the dev node's hub binds the node's address only
    bound = Settings(hub_api_bind_url="http://10.99.0.1:8081")
    assert hub.culler_api_url(bound) == "http://10.99.0.1:8081/hub/api"


# --- auth_inputs --------------------------------------------------------------------------------


def discovery(**changes: Any) -> dict[str, Any]:
    document = {
        "issuer": ISSUER,
        "authorization_endpoint": ENDPOINTS.authorization_endpoint,
        "token_endpoint": ENDPOINTS.token_endpoint,
        "userinfo_endpoint": ENDPOINTS.userinfo_endpoint,
    }
    return {**document, **changes}


def test_endpoints_come_from_the_issuers_discovery_document() -> None:
    asked: list[str] = []

    def fetch(url: str) -> dict[str, Any]:
        asked.append(url)
        return discovery()

    assert oidc_endpoints(ISSUER, fetch) == ENDPOINTS
    assert asked == [f"{ISSUER}/.well-known/openid-configuration"]


def test_a_discovery_document_of_another_issuer_is_refused() -> None:
    with pytest.raises(
        InvalidInputError, match=re.escape("names issuer 'https://evil.example.org'")
    ):
        oidc_endpoints(ISSUER, lambda _: discovery(issuer="https://evil.example.org"))


def test_a_plain_http_endpoint_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="has no https token_endpoint"):
        oidc_endpoints(ISSUER, lambda _: discovery(token_endpoint="http://idp/token"))


def test_oidc_needs_a_crypt_key_file_of_64_hex_characters(
    oidc_settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match=r"^TRE_HUB_CRYPT_KEY_FILE: OIDC sign-in keeps"):
        read_crypt_key(None)
    key = tmp_path / "crypt-key"
    key.write_text("not-hex-and-too-short\n")
    key.chmod(0o600)
    with pytest.raises(InvalidInputError, match="does not hold 64 hex characters"):
        read_crypt_key(key)
    key.write_text(CRYPT_KEY + "\n")
    assert read_crypt_key(key).get_secret_value() == CRYPT_KEY
    key.chmod(0o644)
    with pytest.raises(InvalidInputError, match="has mode 0644"):
        read_crypt_key(key)


def test_a_secret_file_others_may_read_is_refused(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("a-long-password\n")
    password.chmod(0o644)
    settings = Settings(hub_dev_authenticator=True, hub_dev_password_file=password)
    with pytest.raises(InvalidInputError) as refused:
        read_auth_inputs(settings)
    assert str(refused.value) == (
        f"TRE_HUB_DEV_PASSWORD_FILE: {password} has mode 0644, so users other than the hub may "
        "read or change the development sign-in's shared password; run "
        f"'chmod 600 {password}' (a mounted Secret: set defaultMode: 0400)"
    )
    password.chmod(0o600)
    inputs = read_auth_inputs(settings)
    assert inputs.dev_password is not None
    assert inputs.dev_password.get_secret_value() == "a-long-password"
