"""JupyterHub configuration of U-Cloud TRE.

- `hub_config.config`: pure `update_<area>(c, settings)` functions and `apply_config`;
- `hub_config.workspaces`: who may start which server (security invariant 2), decided from
  Workspaces only, the thin KubeSpawner glue, and the in-memory Workspace cache a watch keeps
  current;
- `hub_config.identity`: the one mapping from the identity provider's username claim to the
  platform's user name (refused, never rewritten);
- `hub_config.oidc`: the OIDC authenticator that applies it and keeps groups refreshed;
- `hub_config.auth_inputs`: what the sign-in reads at the hub's start (secret files, the
  identity provider's discovery document);
- `hub_config/jupyterhub_config.py`: the file the hub loads (`jupyterhub -f ...`).
"""
