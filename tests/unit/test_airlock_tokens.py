"""A notebook's token works for its own workspace only (pure rules; the real hub's tokens are
in tests/integration/test_airlock_service.py).

Behaviours under test:
- the hub's answer about a token (`GET /hub/api/user`, as JupyterHub 6.1 writes it) tells a
  notebook's token apart by a scope filtered to its server: `access:servers!server=<u>/<s>`
  binds it to project `<s>`; the person's own tokens (the airlock's sign-in, the hub's token
  page) hold none and are bound to nothing;
- ambiguous tokens are refused outright: filtered to another user's server, to several
  servers, to an unnamed (default) server;
- a notebook's token never carries the output checkers' role, whatever the hub says of the
  person's groups; it files only for its own project, uploads and withdraws only its own
  project's exports, and lists, shows, views, reviews, releases, downloads and revokes
  nothing (each refused before anything is read or written).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from provisioner.airlock.desk import Desk, Person
from provisioner.airlock.hub_sign_in import HubConfig, HubSignIn, notebook_project
from provisioner.errors import RefusedError
from provisioner.models.resources import (
    ExportFile,
    ExportPhase,
    ExportRequest,
    ExportRequestSpec,
    ExportRequestStatus,
)
from provisioner.models.settings import Settings

SETTINGS = Settings(output_checker_group="tre:output-checkers", airlock_url=None)
AIRLOCK = "access:services!service=airlock"
CONFIG = HubConfig(
    api_url="http://127.0.0.1:8081/hub/api",
    api_token="t" * 32,
    client_id="service-airlock",
    service_name="airlock",
    prefix="/services/airlock/",
    callback_url="http://127.0.0.1:8000/services/airlock/oauth_callback",
)


def model(name: str, *scopes: str) -> dict[str, Any]:
    """What the hub answers for a token of `name` with `scopes` (groups always included)."""
    return {
        "kind": "user",
        "name": name,
        "groups": ["tre:output-checkers"],
        "scopes": sorted(scopes),
        "token_id": "a1",
        "session_id": None,
    }


# A server token as the hub mints it from hub_config's server_token_scopes.
NOTEBOOK = model("olga", "users:activity!user=olga", "access:servers!server=olga/olga-lab", AIRLOCK)
# The airlock's own OAuth token (browser sign-in) and a token from the hub's token page.
BROWSER = model("olga", AIRLOCK, "read:users:name!user=olga", "read:users:groups!user=olga")
TOKEN_PAGE = model("olga", AIRLOCK, "access:servers!user=olga", "tokens!user=olga")


@pytest.mark.parametrize(
    ("answer", "project"),
    [(NOTEBOOK, "olga-lab"), (BROWSER, None), (TOKEN_PAGE, None)],
    ids=["server-token", "airlock-sign-in", "token-page"],
)
def test_a_notebooks_token_is_bound_to_its_servers_project(
    answer: dict[str, Any], project: str | None
) -> None:
    assert HubSignIn(CONFIG)._allowed(answer)
    assert notebook_project(answer) == project


@pytest.mark.parametrize(
    "answer",
    [
        model("olga", "access:servers!server=rik/olga-lab", AIRLOCK),
        model("olga", "access:servers!server=olga/a", "access:servers!server=olga/b", AIRLOCK),
        model("olga", "access:servers!server=olga/", AIRLOCK),
        model("olga", "users:activity!server=olga/x/y", AIRLOCK),
        model("olga", "access:servers!server=olga/olga-lab"),  # no access to the airlock
    ],
    ids=["other-users-server", "two-servers", "default-server", "slash", "no-airlock-access"],
)
def test_an_ambiguous_token_is_refused(answer: dict[str, Any]) -> None:
    assert not HubSignIn(CONFIG)._allowed(answer)


def notebook(name: str = "olga", project: str = "olga-lab") -> Person:
    return Person(name, frozenset({"tre:output-checkers"}), workspace=project)


def test_a_notebooks_token_never_carries_the_checkers_role() -> None:
    assert Person("olga", frozenset({"tre:output-checkers"})).is_checker(SETTINGS)
    assert not notebook().is_checker(SETTINGS)


def export(project: str = "heart", author: str = "rik") -> ExportRequest:
    return ExportRequest(
        name="export-abc12",
        namespace=f"tre-{project}",
        spec=ExportRequestSpec(
            project=project,
            author=author,
            files=[ExportFile(path="out/t.csv", size=3, sha256="a" * 64, description="t")],
            context="Aggregate counts over 1500 admissions.",
        ),
        status=ExportRequestStatus(phase=ExportPhase.RELEASED),
    )


def desk() -> Desk:
    # Every refusal below comes before the desk reads or writes anything: no cluster, no S3.
    return Desk(kube=None, s3=None, settings=SETTINGS, clock=lambda: dt.datetime.now(dt.UTC))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("action", "words"),
    [
        (lambda d, p: d.requests_for(p), "list exports: not with a notebook's token"),
        (lambda d, p: d.readable(p, "tre-heart", "export-abc12"), "show export request"),
        (lambda d, p: d.view_file(p, export(), "out/t.csv"), "view the files"),
        (lambda d, p: d.review(p, export(), []), "review export request"),
        (lambda d, p: d.release(p, export()), "release export request"),
        (lambda d, p: d.download(p, export(), "out/t.csv"), "download from export request"),
        (lambda d, p: d.revoke(p, export(), "a reason of some length"), "revoke export"),
    ],
    ids=["list", "show", "view", "review", "release", "download", "revoke"],
)
def test_a_notebooks_token_does_nothing_but_its_own_projects_exports(
    action: Any, words: str
) -> None:
    with pytest.raises(RefusedError, match=words) as refused:
        action(desk(), notebook())
    assert "never from a workspace" in str(refused.value)


def test_a_notebooks_token_files_for_its_own_project_only() -> None:
    rik = notebook("rik", "olga-lab")
    with pytest.raises(RefusedError, match="files exports of project olga-lab only"):
        desk().submit(rik, "heart", "ten characters or more", [])
    with pytest.raises(RefusedError, match="acts for project olga-lab only"):
        desk().upload(rik, export("heart", author="rik"), None)  # type: ignore[arg-type]
    with pytest.raises(RefusedError, match="acts for project olga-lab only"):
        desk().withdraw(rik, export("heart", author="rik"))
