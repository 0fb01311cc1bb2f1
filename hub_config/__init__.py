"""JupyterHub configuration of U-Cloud TRE.

- `hub_config.config`: pure `update_<area>(c, settings)` functions and `apply_config`;
- `hub_config.workspaces`: who may start which server (security invariant 2), decided from
  Workspaces only, plus the thin KubeSpawner glue that reads them;
- `hub_config/jupyterhub_config.py`: the file the hub loads (`jupyterhub -f ...`).
"""
