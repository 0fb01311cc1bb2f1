"""The configuration file JupyterHub loads: `jupyterhub -f hub_config/jupyterhub_config.py`.

Everything lives in `hub_config.config`; this file only hands it the hub's `Config` and the
platform settings (TRE_* environment variables). With zero-to-jupyterhub, put these lines in
`hub.extraConfig` instead: they run after the chart's own settings and take precedence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub_config.config import apply_config
from provisioner.models.settings import Settings

if TYPE_CHECKING:
    from traitlets.config import Config

    # JupyterHub (traitlets' PyFileConfigLoader) puts `get_config` into this file's namespace
    # when it executes it; declared here so linters and type checkers know it.
    def get_config() -> Config: ...


c = get_config()
apply_config(c, Settings())
