"""The hub's OIDC sign-in: OAuthenticator's GenericOAuthenticator with the platform's identity
rules (`c.JupyterHub.authenticator_class`, set by `hub_config.config.update_auth`).

- **The name.** The username claim's value becomes the hub's name only through
  `hub_config.identity.platform_username`; a value it refuses ends the sign-in with a 403
  naming the claim and why, before a hub user is created.
- **Groups are refreshed.** With auth state on, JupyterHub refreshes a person's groups from
  the provider's userinfo when they are older than `auth_refresh_age`, and before every
  start. Where the refresh fails (the provider no longer accepts the person's tokens: the
  account was disabled, the session ended), or the person left the allowed group or now has
  another name, they lose every hub group at once and must sign in again: JupyterHub alone
  would keep their last groups for requests made with an API token, and with them the output
  checkers' power at the airlock.
"""

from __future__ import annotations

from typing import Any

from oauthenticator.generic import GenericOAuthenticator
from tornado import web

from hub_config.identity import UsernameRefused, platform_username


class PlatformOAuthenticator(GenericOAuthenticator):  # type: ignore[misc]
    """GenericOAuthenticator whose names are platform user names and whose groups are
    dropped when the provider stops vouching for the person."""

    def user_info_to_username(self, user_info: dict[str, Any]) -> str:
        claim = str(self.username_claim)
        try:
            return platform_username(user_info.get(claim), claim)
        except UsernameRefused as exc:
            self.log.warning("OIDC sign-in refused: %s", exc)
            raise web.HTTPError(403, "%s", str(exc)) from None

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> Any:
        try:
            refreshed = await super().refresh_user(user, handler, **kwargs)
        except web.HTTPError:
            refreshed = False  # e.g. the claim now holds a name the platform refuses
        if refreshed is True:
            return True  # no auth state: nothing to refresh (never so on the platform)
        if (
            refreshed
            and refreshed.get("name") == user.name
            and set(refreshed.get("groups") or ()) & set(self.allowed_groups)
        ):
            return refreshed
        self.log.warning(
            "%s: the identity provider no longer vouches for them in the allowed group; "
            "their hub groups are removed until they sign in again",
            user.name,
        )
        user.sync_groups([])
        return False
