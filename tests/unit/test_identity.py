"""The one mapping from the identity provider's username claim to the platform's user name
(hub_config.identity) and the authenticator that applies it (hub_config.oidc).

Behaviours under test:
- a value that is already a platform user name is the name, unchanged;
- a value that NFKC normalisation or case folding would change is refused with its own
  message (look-alikes such as KELVIN SIGN for 'k', full-width letters, ligatures, upper
  case), before JupyterHub's lower-casing could make it another person's name;
- a value outside the platform's user name rule (the rule of members, leads and requesters)
  is refused with that rule's words: spaces, '/', ':', `system:` names, too long, a leading
  '.', a trailing newline;
- a claim that is missing, empty or not a string is refused;
- every name the mapping accepts passes JupyterHub's own `username_pattern` check too, and
  JupyterHub's lower-casing never changes it;
- the authenticator turns a refusal into a 403 that carries the message.
"""

from __future__ import annotations

import re

import pytest
from tornado import web
from traitlets.config import Config

from hub_config.identity import UsernameRefused, normal_form, platform_username
from hub_config.oidc import PlatformOAuthenticator
from provisioner.models.rules import USERNAME_PATTERN

ACCEPTED = [
    "karen",
    "lena.lead",
    "a.jansen@umc.nl",
    "olga_checker",
    "0123",
    # A Keycloak `sub` (a UUID) fits the rule.
    "f47ac10b-58cc-4372-a567-0e02b2c3d479",
    "x" * 63,
]


@pytest.mark.parametrize("value", ACCEPTED)
def test_a_platform_user_name_is_taken_unchanged(value: str) -> None:
    assert platform_username(value, "sub") == value
    assert re.match(USERNAME_PATTERN, value)
    assert value.lower() == value  # JupyterHub's normalize_username changes nothing


NOT_NORMAL = [
    # (value, what normalisation makes of it)
    ("\u212aaren", "karen"),  # KELVIN SIGN: its lower case is 'k'
    ("Lena.Lead", "lena.lead"),  # upper case: would silently become the lead
    ("KAREN", "karen"),
    ("\uff4baren", "karen"),  # FULLWIDTH LATIN SMALL LETTER K
    ("\ufb01ona", "fiona"),  # LATIN SMALL LIGATURE FI
    ("stra\u00dfe", "strasse"),  # sharp s case-folds to 'ss'
    ("kare\u0301n", "karén"),  # a combining accent composes
    ("karen\u2024x", "karen.x"),  # ONE DOT LEADER is NFKC '.'
]


@pytest.mark.parametrize(("value", "folded"), NOT_NORMAL)
def test_a_name_that_normalisation_would_change_is_refused(value: str, folded: str) -> None:
    assert normal_form(value) == folded
    with pytest.raises(UsernameRefused) as refused:
        platform_username(value, "preferred_username")
    assert str(refused.value) == (
        f"the identity provider's 'preferred_username' {value!r} is not in normal form (it "
        f"would read as {folded!r}, which may be another person's name); platform user names "
        "are lower case and plain ASCII: ask your administrator to fix the account, the hub "
        "never rewrites a name"
    )


OUTSIDE_THE_RULE = [
    ("lena lead", "use 1-63 lower-case characters"),
    ("lena/lead", "use 1-63 lower-case characters"),
    ("system:admin", "'system:' names are Kubernetes service identities"),
    ("system:serviceaccount:tre-system:tre-controller", "'system:' names"),
    (".hidden", "use 1-63 lower-case characters"),
    ("-lead", "use 1-63 lower-case characters"),
    ("x" * 64, "use 1-63 lower-case characters"),
    ("karen\n", "use 1-63 lower-case characters"),
    ("kar\u00e9n", "use 1-63 lower-case characters"),  # normal form, but not ASCII
    ("lena+lead", "use 1-63 lower-case characters"),
]


@pytest.mark.parametrize(("value", "reason"), OUTSIDE_THE_RULE)
def test_a_name_outside_the_platforms_rule_is_refused(value: str, reason: str) -> None:
    with pytest.raises(UsernameRefused) as refused:
        platform_username(value, "uid")
    message = str(refused.value)
    assert message.startswith(f"the identity provider's 'uid': username {value!r} is invalid: ")
    assert reason in message
    assert message.endswith("; ask your administrator to fix the account")


@pytest.mark.parametrize("value", [None, "", 42, ["karen"], {"name": "karen"}])
def test_a_missing_or_malformed_claim_is_refused(value: object) -> None:
    with pytest.raises(UsernameRefused, match=r"^the identity provider sent no usable 'sub'"):
        platform_username(value, "sub")


def test_the_authenticator_refuses_with_a_403_that_says_why() -> None:
    c = Config()
    c.GenericOAuthenticator.username_claim = "preferred_username"
    authenticator = PlatformOAuthenticator(config=c)

    assert authenticator.user_info_to_username({"preferred_username": "karen"}) == "karen"
    with pytest.raises(web.HTTPError) as refused:
        authenticator.user_info_to_username({"preferred_username": "\u212aaren"})
    assert refused.value.status_code == 403
    assert "would read as 'karen'" in refused.value.log_message % refused.value.args
