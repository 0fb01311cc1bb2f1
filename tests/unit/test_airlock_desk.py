"""What the airlock decides itself, where the API server cannot see (pure rules), and the pieces
of the service that need no server: the upload stream and the hub's registration.

Behaviours under test:
- who may read an export (checkers, the author, the members, the lead; nobody else), and who
  may see its quarantined bytes (checkers who are not the project's own people: a member who
  is also a checker may not, since showing unreviewed bytes outside the workspace is an export
  without review);
- reviews under review are hidden from each other and from the project's people; after the
  decision all are shown;
- only the workspace's owner is the lead, and only while a member of the Ready workspace;
  nobody who has ever been the project's (a former member too) reviews or sees its bytes,
  and nobody reviews while the workspace is not Ready (review 3, S8, S9);
- votes come from a form one per file, and a missing or unknown vote names the file;
- the upload stream cuts the body into parts of exactly the part size (the last shorter), and
  an error put into it ends the upload with that error;
- the hub registers the airlock only with a token, of a useful length; then every user and
  every notebook's token may reach it, and notebooks learn its URL and their project;
- the sign-in: after it the browser goes only to a page of the airlock (no open redirect),
  PKCE is RFC 7636's S256, and the service refuses to start without the hub's environment.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from kubespawner import KubeSpawner
from pydantic import SecretStr
from traitlets.config import Config

from hub_config import config as hub
from provisioner.airlock.desk import (
    Person,
    is_lead,
    may_read,
    may_review,
    may_view_files,
    parse_votes,
    visible_reviews,
)
from provisioner.airlock.hub_sign_in import ENVIRONMENT, HubConfig, pkce_challenge, safe_next
from provisioner.airlock.service import StreamSource
from provisioner.errors import InvalidInputError
from provisioner.models.resources import (
    ExportFile,
    ExportPhase,
    ExportRequest,
    ExportRequestSpec,
    ExportRequestStatus,
    ExportReview,
    FileVote,
    Vote,
    Workspace,
    WorkspacePhase,
    WorkspaceSpec,
    WorkspaceStatus,
)
from provisioner.models.settings import Settings
from tests.kubespawner_harness import DEV_AUTH, dev_settings

AT = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
SETTINGS = Settings(output_checker_group="tre:output-checkers", airlock_url=None)
CHECKERS = frozenset({"tre:output-checkers"})


def export(*reviewers: str, phase: ExportPhase = ExportPhase.SUBMITTED) -> ExportRequest:
    return ExportRequest(
        name="export-abc12",
        namespace="tre-cardio",
        spec=ExportRequestSpec(
            project="cardio",
            author="ravi",
            files=[
                ExportFile(path="out/table.csv", size=10, sha256="a" * 64, description="counts"),
                ExportFile(path="notes.txt", size=5, sha256="b" * 64, description="notes"),
            ],
            context="Readmission counts by age band, cohort of 4000 patients.",
            reviews=[
                ExportReview(by=r, at=AT, votes=[FileVote(path="out/table.csv", vote=Vote.APPROVE)])
                for r in reviewers
            ],
        ),
        status=ExportRequestStatus(phase=phase),
    )


WORKSPACE = Workspace(
    name="cardio",
    spec=WorkspaceSpec(
        project="cardio",
        owner="lea",
        namespace="tre-cardio",
        members=["lea", "ravi"],
        people=["lea", "olaf", "ravi"],  # olaf, a checker, was a member once
    ),
    status=WorkspaceStatus(phase=WorkspacePhase.READY),
)


@pytest.mark.parametrize(
    ("person", "reads", "sees_bytes"),
    [
        (Person("olga", CHECKERS), True, True),
        (Person("ravi"), True, False),  # the author
        (Person("lea"), True, False),  # the lead
        (Person("ravi", CHECKERS), True, False),  # a member who is also a checker
        (Person("olaf", CHECKERS), True, False),  # a former member who is a checker
        (Person("mallory"), False, False),
        (Person("mallory", frozenset({"tre:approvers"})), False, False),
    ],
    ids=["checker", "author", "lead", "member-checker", "former-member", "stranger", "other-group"],
)
def test_who_reads_an_export_and_who_sees_its_bytes(
    person: Person, reads: bool, sees_bytes: bool
) -> None:
    assert may_read(person, export(), WORKSPACE, SETTINGS) is reads
    assert may_view_files(person, export(), WORKSPACE, SETTINGS) is sees_bytes


def test_without_its_workspace_only_the_author_and_checkers_read_it() -> None:
    assert may_read(Person("ravi"), export(), None, SETTINGS)
    assert not may_read(Person("lea"), export(), None, SETTINGS)
    assert not is_lead(Person("lea"), None)
    assert is_lead(Person("lea"), WORKSPACE)
    assert not is_lead(Person("ravi"), WORKSPACE)


def _changed(members: list[str], phase: WorkspacePhase) -> Workspace:
    return WORKSPACE.model_copy(
        update={
            "spec": WORKSPACE.spec.model_copy(update={"members": members}),
            "status": WorkspaceStatus(phase=phase),
        }
    )


def test_the_owner_leads_only_as_a_member_of_the_ready_workspace() -> None:
    """Review 3, S9: a revoked owner keeps the project's name, not the lead's powers; and
    review 3, S8: nor may they, a checker too, then review or see its bytes."""
    revoked = _changed(["ravi"], WorkspacePhase.READY)
    assert not is_lead(Person("lea"), revoked)
    assert not may_view_files(Person("lea", CHECKERS), export(), revoked, SETTINGS)
    assert not may_review(Person("lea", CHECKERS), export(), revoked, SETTINGS)
    assert not is_lead(Person("lea"), _changed([], WorkspacePhase.FROZEN))


def test_nobody_reviews_while_the_workspace_is_not_ready() -> None:
    olga = Person("olga", CHECKERS)
    assert may_review(olga, export(), WORKSPACE, SETTINGS)
    assert not may_review(olga, export(), _changed([], WorkspacePhase.FROZEN), SETTINGS)
    assert not may_review(olga, export(), None, SETTINGS)
    assert not may_review(Person("olaf", CHECKERS), export(), WORKSPACE, SETTINGS)


def test_reviews_stay_hidden_until_the_decision() -> None:
    under_review = export("olga", "omar")
    own, hidden = visible_reviews(Person("olga", CHECKERS), under_review, SETTINGS)
    assert [r.by for r in own] == ["olga"] and hidden == 1
    own, hidden = visible_reviews(Person("ravi"), under_review, SETTINGS)
    assert own == () and hidden == 2
    decided = export("olga", "omar", phase=ExportPhase.APPROVED)
    shown, hidden = visible_reviews(Person("ravi"), decided, SETTINGS)
    assert [r.by for r in shown] == ["olga", "omar"] and hidden == 0


def test_votes_come_one_per_file() -> None:
    votes = parse_votes(
        export(),
        {
            "vote:out/table.csv": "approve",
            "comment:out/table.csv": "ok",
            "vote:notes.txt": "reject",
        },
    )
    assert [(v.path, v.vote, v.comment) for v in votes] == [
        ("out/table.csv", Vote.APPROVE, "ok"),
        ("notes.txt", Vote.REJECT, ""),
    ]
    with pytest.raises(InvalidInputError, match=r"vote:notes.txt: vote on every file"):
        parse_votes(export(), {"vote:out/table.csv": "approve"})
    with pytest.raises(InvalidInputError, match=r"'maybe' is not a vote"):
        parse_votes(export(), {"vote:out/table.csv": "maybe", "vote:notes.txt": "approve"})


def test_the_upload_stream_cuts_exact_parts_and_carries_errors() -> None:
    source = StreamSource("out/table.csv", 25)

    def feed(chunks: list[bytes | BaseException | None]) -> None:
        for chunk in chunks:
            source.chunks.put(chunk)

    threading.Thread(target=feed, args=([b"abcdefg", b"hijklmnopq", b"rstuvwxy", None],)).start()
    assert list(source.read_parts(10)) == [b"abcdefghij", b"klmnopqrst", b"uvwxy"]

    broken = StreamSource("out/table.csv", 25)
    broken.chunks.put(b"abc")
    broken.chunks.put(InvalidInputError("the upload was interrupted"))
    with pytest.raises(InvalidInputError, match="interrupted"):
        list(broken.read_parts(10))


def _hub(settings: Settings, token: str | None) -> Config:
    c = Config()
    inputs = hub.AuthInputs(
        dev_password=DEV_AUTH.dev_password, airlock_token=SecretStr(token) if token else None
    )
    hub.apply_config(c, dev_settings(settings), inputs, workspace_reader=lambda: [])
    return c


def test_the_hub_registers_the_airlock_only_with_a_token() -> None:
    without = _hub(SETTINGS, None)
    assert [s["name"] for s in without.JupyterHub.services] == ["idle-culler"]
    assert "server_token_scopes" not in without.Spawner
    with pytest.raises(InvalidInputError, match="TRE_HUB_AIRLOCK_TOKEN_FILE"):
        _hub(SETTINGS, "short")

    c = _hub(
        SETTINGS.model_copy(update={"hub_dev_groups": {"tre:output-checkers": ["olga"]}}), "t" * 40
    )
    airlock = c.JupyterHub.services[-1]
    assert airlock["name"] == "airlock"
    assert airlock["url"] == "http://tre-airlock.tre-airlock.svc.cluster.local:8080"
    assert airlock["api_token"] == "t" * 40 and airlock["oauth_no_confirm"] is True
    assert {"name": "user", "scopes": ["self", "access:services!service=airlock"]} in (
        c.JupyterHub.load_roles
    )
    # Exactly what the notebook's server needs, and the airlock; `access:servers!server` is
    # also how the airlock tells a notebook's token from the person's own (S4): never drop it.
    assert c.Spawner.server_token_scopes == [
        "users:activity!user",
        "access:servers!server",
        "access:services!service=airlock",
    ]
    assert "server_token_scopes" in KubeSpawner.class_trait_names(config=True)  # a real trait
    env = c.KubeSpawner.environment
    assert env["TRE_AIRLOCK_URL"] == (
        "http://tre-airlock.tre-airlock.svc.cluster.local:8080/services/airlock/"
    )
    assert env["PIP_NO_INDEX"] == "1"  # the offline settings are kept

    class Server:
        name = "cardio"

    assert env["TRE_PROJECT"](Server()) == "cardio"
    assert c.JupyterHub.load_groups == {"tre:output-checkers": {"users": ["olga"]}}


def test_after_sign_in_the_browser_goes_only_to_a_page_of_the_airlock() -> None:
    prefix = "/services/airlock/"
    assert (
        safe_next("/services/airlock/exports/tre-a/x", prefix)
        == "/services/airlock/exports/tre-a/x"
    )
    for elsewhere in (
        "https://evil.example/",
        "//evil.example/",
        "/hub/admin",
        None,
        "/services/airlock/..//x",
    ):
        assert safe_next(elsewhere, prefix) == prefix


def test_pkce_challenge_is_rfc7636_s256() -> None:
    # RFC 7636, appendix B
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_the_service_refuses_to_start_without_the_hubs_environment() -> None:
    with pytest.raises(InvalidInputError, match="JUPYTERHUB_API_URL, JUPYTERHUB_API_TOKEN"):
        HubConfig.from_environment({"JUPYTERHUB_SERVICE_NAME": "airlock"})
    env = {name: "x" for name in ENVIRONMENT} | {"JUPYTERHUB_SERVICE_PREFIX": "services/airlock"}
    with pytest.raises(InvalidInputError, match="JUPYTERHUB_SERVICE_PREFIX"):
        HubConfig.from_environment(env)
    config = HubConfig.from_environment(
        env
        | {"JUPYTERHUB_SERVICE_PREFIX": "/services/airlock/", "JUPYTERHUB_SERVICE_NAME": "airlock"}
    )
    assert config.access_scopes == {"access:services!service=airlock", "access:services"}
