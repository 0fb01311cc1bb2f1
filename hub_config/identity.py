"""One mapping from the identity provider's claim to the platform's user name.

The value of the username claim (`TRE_HUB_OIDC_USERNAME_CLAIM`) becomes, unchanged, the
person's JupyterHub name and their Kubernetes user name: the pod's member annotation, the
name the airlock impersonates, the name Workspaces and access requests list. Guarantees:

- the name is exactly the claim's value: never lower-cased, trimmed or otherwise rewritten,
  so two accounts of the provider can never become one platform name;
- it matches the platform's one user name rule (`provisioner.models.rules.validate_username`,
  the rule of every member, lead and requester), which admits only lower-case ASCII letters,
  digits, '.', '_', '@' and '-', at most 63 characters, no `system:` names;
- a value that Unicode NFKC normalisation or case folding would change ('\\u212aaren', whose
  lower case is 'karen'; 'Lena.Lead') is refused with its own message, before JupyterHub's
  lower-casing ever sees it;
- anything that is not a non-empty string (a number, a list, a missing claim) is refused.

A refusal is a `UsernameRefused` naming the claim, the value and why; the hub turns it into
a 403 at sign-in, before any hub user exists (`hub_config.oidc`).
"""

from __future__ import annotations

import unicodedata

from provisioner.models.rules import validate_username


class UsernameRefused(ValueError):
    """The identity provider's value cannot be a platform user name."""


def normal_form(value: str) -> str:
    """What Unicode compatibility normalisation and case folding make of `value`."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())


def platform_username(value: object, claim: str) -> str:
    """The platform user name for the claim `claim` whose value is `value`, or
    UsernameRefused saying why and what to do."""
    if not isinstance(value, str) or not value:
        raise UsernameRefused(
            f"the identity provider sent no usable {claim!r} claim (got {value!r}); ask your "
            "administrator to release it as a string"
        )
    folded = normal_form(value)
    if folded != value:
        raise UsernameRefused(
            f"the identity provider's {claim!r} {value!r} is not in normal form (it would "
            f"read as {folded!r}, which may be another person's name); platform user names "
            "are lower case and plain ASCII: ask your administrator to fix the account, the "
            "hub never rewrites a name"
        )
    try:
        return validate_username(value)
    except ValueError as exc:
        raise UsernameRefused(
            f"the identity provider's {claim!r}: {exc}; ask your administrator to fix the account"
        ) from exc
