"""The configuration file JupyterHub loads: `jupyterhub -f hub_config/jupyterhub_config.py`.

Everything lives in `hub_config.config`; this file is the hub's I/O edge: it reads the
platform settings (TRE_* environment variables), the sign-in's secrets and the identity
provider's endpoints (`hub_config.auth_inputs`), starts the Workspace cache, and hands them to
`apply_config`. A refused configuration (say, the development sign-in beside OIDC settings)
ends the hub with exit code 1 and one line naming the setting and the fix, before it listens.
With zero-to-jupyterhub, put these lines in `hub.extraConfig` instead: they run after the
chart's own settings and take precedence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from hub_config.auth_inputs import read_auth_inputs
from hub_config.config import apply_config
from hub_config.workspaces import read_workspaces_from_cluster, workspace_cache
from provisioner.errors import TreError
from provisioner.models.settings import Settings

if TYPE_CHECKING:
    from traitlets.config import Config

    # JupyterHub (traitlets' PyFileConfigLoader) puts `get_config` into this file's namespace
    # when it executes it; declared here so linters and type checkers know it.
    def get_config() -> Config: ...


c = get_config()
try:
    settings = Settings()
    auth = read_auth_inputs(settings)
    apply_config(c, settings, auth, workspace_reader=read_workspaces_from_cluster)
except (TreError, ValidationError) as exc:
    # SystemExit, not the exception: JupyterHub would print a traceback around the message.
    raise SystemExit(f"hub configuration refused: {exc}") from None
# Listing starts now, so the cache is synced before the first person signs in.
workspace_cache()
