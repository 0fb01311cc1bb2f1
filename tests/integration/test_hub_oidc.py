"""The hub's OIDC sign-in against a real OpenID Connect provider that offers hostile names
(tests/oidc_provider.py): a real hub process with its proxy and the airlock service, started
as `tre dev up` starts them but configured for OIDC (TRE_HUB_OIDC_*, the default username
claim `sub`, a crypt key file, auth refreshed every 10 s). The provider serves TLS with a
throwaway CA that the hub trusts through SSL_CERT_FILE, so the hub's production rule (every
endpoint of the discovery document is https) is what runs.

Behaviours under test, each through the hub's real sign-in (/hub/oauth_login, the provider,
/hub/oauth_callback):
- a normal name signs in and is the hub's name unchanged;
- a look-alike name ('\\u212aaren', whose lower case is 'karen'), an upper-case name, a name
  with characters outside the platform's rule, and a name that would collide with an existing
  member once lower-cased are each refused with a 403 that says why, and no hub user is
  created (the hub's database is read), nor is the existing member signed in;
- a person outside the allowed group is refused;
- an output checker removed from the checkers' group in the provider loses the group at the
  hub within the refresh age, through requests made with their API token (JupyterHub alone
  would keep it until their next sign-in), and the airlock, which asks the hub on every
  request, no longer treats them as a checker; a checker whose account the provider disables
  loses every hub group the same way, and their browser session must sign in again;
- a member of a Ready workspace starts its server while in the allowed group; removed from
  it in the provider, their next start is refused at once (the hub asks the provider right
  before a start), even with an API token, and no pod is made.
"""

from __future__ import annotations

import html
import os
import secrets
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from provisioner.airlock.release import ensure_airlock_buckets
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.hub import DevHub, HubEndpoints
from provisioner.kube.resources import RESOURCES
from provisioner.models.settings import Settings
from provisioner.planning.names import AIRLOCK_PREFIX, namespace_name
from provisioner.storage.s3 import s3_client
from tests.integration.test_hub import ready_project, wait_for
from tests.integration.workspace_world import World
from tests.oidc_provider import TestIdentityProvider

pytestmark = pytest.mark.integration
PODS = RESOURCES[("v1", "Pod")]
CLIENT_ID = "tre-hub"
ALLOWED = "tre-users"
REFRESH_SECONDS = 10
# Never visited: the test's browser takes the code from the provider's redirect and brings
# it to the hub's own address (the setting must be https, as it is behind TLS in a cluster).
CALLBACK_URL = "https://127.0.0.1/hub/oauth_callback"


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestIdentityProvider]:
    provider = TestIdentityProvider(
        tmp_path_factory.mktemp("idp"), CLIENT_ID, secrets.token_urlsafe(24)
    )
    provider.start()
    yield provider
    provider.stop()


def _secret_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    return path


@pytest.fixture(scope="module")
def oidc_hub(
    installed_platform: Settings,
    dev_platform: DevCluster,
    idp: TestIdentityProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HubEndpoints, DevHub]]:
    """The hub, its proxy and the airlock, the hub signing people in at `idp`."""
    ensure_airlock_buckets(s3_client(installed_platform), installed_platform)
    secrets_dir = tmp_path_factory.mktemp("oidc-hub-secrets")
    oidc = {
        "TRE_HUB_DEV_AUTHENTICATOR": "false",
        "TRE_HUB_OIDC_ISSUER": idp.issuer,
        "TRE_HUB_OIDC_CLIENT_ID": CLIENT_ID,
        "TRE_HUB_OIDC_CLIENT_SECRET_FILE": str(
            _secret_file(secrets_dir / "client-secret", idp.client_secret)
        ),
        "TRE_HUB_OIDC_CALLBACK_URL": CALLBACK_URL,
        "TRE_HUB_OIDC_ALLOWED_GROUP": ALLOWED,
        "TRE_HUB_CRYPT_KEY_FILE": str(
            _secret_file(secrets_dir / "crypt-key", secrets.token_hex(32))
        ),
        "TRE_HUB_AUTH_REFRESH_SECONDS": str(REFRESH_SECONDS),
        # The provider's CA, and only it: the hub's discovery and OAuth calls verify TLS.
        "SSL_CERT_FILE": str(idp.ca_file),
    }
    dev_hub = DevHub(dev_platform, "oidc-hub")
    try:
        yield dev_hub.up(installed_platform, lambda m: print(f"[hub] {m}"), extra_env=oidc), dev_hub
    finally:
        for proc in dev_hub.processes():
            print(f"\n--- last lines of {proc.log} ---\n{proc.log_tail(30)}")
        dev_hub.down(lambda _: None)


class Browser:
    """One person's browser: signs in through the provider, then holds the hub's cookies."""

    def __init__(self, hub: HubEndpoints, idp: TestIdentityProvider) -> None:
        self.hub = hub.probe_url
        self.idp = idp
        self.session = requests.Session()

    def sign_in(self, claims: dict[str, Any]) -> requests.Response:
        """The hub's answer to the callback: 302 signed in, or the refusal."""
        self.idp.sign_in_as(claims)
        login = self.session.get(f"{self.hub}/hub/oauth_login", allow_redirects=False, timeout=10)
        assert login.status_code == 302, login.text
        assert login.headers["Location"].startswith(f"{self.idp.issuer}/authorize?")
        back = self.session.get(
            login.headers["Location"],
            verify=str(self.idp.ca_file),
            allow_redirects=False,
            timeout=10,
        )
        assert back.status_code == 302, back.text
        callback = urllib.parse.urlsplit(back.headers["Location"])
        assert callback._replace(query="").geturl() == CALLBACK_URL
        return self.session.get(
            f"{self.hub}/hub/oauth_callback?{callback.query}", allow_redirects=False, timeout=30
        )

    def token(self, name: str) -> str:
        """An API token of the signed-in person, made on the hub as its token page does."""
        self.session.get(f"{self.hub}/hub/home", timeout=10)
        made = self.session.post(
            f"{self.hub}/hub/api/users/{name}/tokens",
            json={"note": "test_hub_oidc", "expires_in": 3600},
            headers={"X-XSRFToken": self.session.cookies.get("_xsrf") or ""},
            timeout=10,
        )
        assert made.status_code == 201, made.text
        return str(made.json()["token"])


@pytest.fixture
def browser(
    oidc_hub: tuple[HubEndpoints, DevHub], idp: TestIdentityProvider
) -> Callable[[], Browser]:
    return lambda: Browser(oidc_hub[0], idp)


def hub_users(dev_hub: DevHub) -> set[str]:
    """Every user in the hub's database, read directly (no admin exists to ask)."""
    with sqlite3.connect(f"file:{dev_hub.dir / 'jupyterhub.sqlite'}?mode=ro", uri=True) as db:
        return {row[0] for row in db.execute("SELECT name FROM users")}


def whoami(hub: HubEndpoints, token: str) -> dict[str, Any]:
    response = requests.get(
        f"{hub.probe_url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    model: dict[str, Any] = response.json()
    return model


def test_a_normal_name_signs_in_unchanged(
    browser: Callable[[], Browser], oidc_hub: tuple[HubEndpoints, DevHub]
) -> None:
    hub, dev_hub = oidc_hub
    person = browser()
    signed_in = person.sign_in({"sub": "lena.lead", "groups": [ALLOWED]})
    assert signed_in.status_code == 302, signed_in.text
    model = whoami(hub, person.token("lena.lead"))
    assert model["name"] == "lena.lead"
    assert model["groups"] == [ALLOWED]
    assert "lena.lead" in hub_users(dev_hub)


@pytest.mark.parametrize(
    ("sub", "says"),
    [
        ("\u212aaren", "would read as 'karen'"),
        ("Lena.Lead", "would read as 'lena.lead'"),
        ("KAREN", "would read as 'karen'"),
        ("lena lead", "use 1-63 lower-case characters"),
        ("system:admin", "'system:' names are Kubernetes service identities"),
        ("lena/../admin", "use 1-63 lower-case characters"),
    ],
)
def test_a_name_outside_the_rule_is_refused_and_no_user_is_made(
    browser: Callable[[], Browser],
    oidc_hub: tuple[HubEndpoints, DevHub],
    sub: str,
    says: str,
) -> None:
    hub, dev_hub = oidc_hub
    # The member whose name a look-alike or an upper-case variant would take.
    assert browser().sign_in({"sub": "lena.lead", "groups": [ALLOWED]}).status_code == 302
    before = hub_users(dev_hub)

    person = browser()
    refused = person.sign_in({"sub": sub, "groups": [ALLOWED]})

    assert refused.status_code == 403, refused.text
    page = html.unescape(refused.text)
    assert says in page
    assert "ask your administrator to fix the account" in page
    assert hub_users(dev_hub) == before
    # Not signed in as anyone: the hub sends the browser to sign in.
    home = person.session.get(f"{hub.probe_url}/hub/home", allow_redirects=False, timeout=10)
    assert home.status_code == 302
    assert "/hub/login" in home.headers["Location"]


def test_someone_outside_the_allowed_group_is_refused(
    browser: Callable[[], Browser], oidc_hub: tuple[HubEndpoints, DevHub]
) -> None:
    refused = browser().sign_in({"sub": "mallory", "groups": ["visitors"]})
    assert refused.status_code == 403
    assert "mallory" not in hub_users(oidc_hub[1])


def airlock_sees_a_checker(hub: HubEndpoints, token: str) -> bool:
    page = requests.get(
        f"{hub.probe_url}{AIRLOCK_PREFIX}",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert page.status_code == 200, page.text
    return "You are an output checker" in page.text


def checker_removed(idp: TestIdentityProvider, name: str) -> None:
    idp.change(name, groups=[ALLOWED])


@pytest.mark.parametrize(
    ("in_the_provider", "groups_left", "signs_in_again"),
    [
        # removed from the checkers' group: still signed in, no longer a checker
        (checker_removed, [ALLOWED], False),
        # the account disabled: its tokens refused, every group gone, the browser signs in again
        (TestIdentityProvider.disable, [], True),
    ],
    ids=["removed-from-the-group", "account-disabled"],
)
def test_a_checker_loses_the_group_within_the_refresh_age(
    browser: Callable[[], Browser],
    oidc_hub: tuple[HubEndpoints, DevHub],
    idp: TestIdentityProvider,
    installed_platform: Settings,
    in_the_provider: Callable[[TestIdentityProvider, str], None],
    groups_left: list[str],
    signs_in_again: bool,
) -> None:
    hub, _ = oidc_hub
    checkers = installed_platform.output_checker_group
    name = f"checker-{secrets.token_hex(3)}"
    person = browser()
    assert person.sign_in({"sub": name, "groups": [ALLOWED, checkers]}).status_code == 302
    token = person.token(name)
    assert sorted(whoami(hub, token)["groups"]) == sorted([ALLOWED, checkers])
    assert airlock_sees_a_checker(hub, token)

    in_the_provider(idp, name)

    # With the API token only (no new sign-in): the hub asks the provider again once what it
    # knows is older than the refresh age; JupyterHub alone would wait for the next sign-in.
    wait_for(
        lambda: whoami(hub, token)["groups"] == groups_left,
        f"the hub to drop {name}'s checker group",
        REFRESH_SECONDS + 15,
    )
    assert not airlock_sees_a_checker(hub, token)
    home = person.session.get(f"{hub.probe_url}/hub/home", allow_redirects=False, timeout=10)
    assert (home.status_code == 302 and "/hub/login" in home.headers["Location"]) is signs_in_again


@pytest.fixture
def world(installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


def start(hub: HubEndpoints, token: str, user: str, server: str) -> requests.Response:
    return requests.post(
        f"{hub.probe_url}/hub/api/users/{user}/servers/{server}",
        headers={"Authorization": f"token {token}"},
        json={},
        timeout=60,
    )


def test_a_member_removed_from_the_allowed_group_starts_nothing(
    browser: Callable[[], Browser],
    oidc_hub: tuple[HubEndpoints, DevHub],
    idp: TestIdentityProvider,
    world: World,
) -> None:
    hub, _ = oidc_hub
    _, project, _ = ready_project(world)
    namespace = namespace_name(project)
    lea = browser()
    assert lea.sign_in({"sub": "lea", "groups": [ALLOWED]}).status_code == 302
    token = lea.token("lea")
    # A member in the allowed group starts the project's server (the hub's cache learns of
    # the new workspace from its watch within moments); no node here, so it stays pending.
    wait_for(
        lambda: start(hub, token, "lea", project).status_code in (201, 202),
        f"the start of {project} to be accepted",
    )
    wait_for(lambda: world.admin.list(PODS, namespace=namespace), "the notebook pod")
    stopped = requests.delete(
        f"{hub.probe_url}/hub/api/users/lea/servers/{project}",
        headers={"Authorization": f"token {token}"},
        timeout=60,
    )
    assert stopped.status_code in (202, 204), stopped.text
    wait_for(lambda: world.admin.list(PODS, namespace=namespace) == [], "the pod to be deleted")

    idp.change("lea", groups=["visitors"])

    # At once, not after the refresh age: the hub asks the provider right before a start.
    [refused] = wait_for(
        lambda: [r for r in [start(hub, token, "lea", project)] if r.status_code != 409],
        "the stopped server to be gone",
    )
    assert refused.status_code == 403, refused.text
    assert "lea is no longer in the group tre-users" in refused.json()["message"]
    assert world.admin.list(PODS, namespace=namespace) == []
    assert whoami(hub, token)["groups"] == []
