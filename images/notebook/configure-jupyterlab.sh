#!/bin/sh
# The JupyterLab lock-down of the notebook image, run once at build time against the venv:
#   sh configure-jupyterlab.sh /opt/venv
# The one copy both builds run: the Dockerfile and the local build for the dev node
# (provisioner/devcluster/images.py). README.md beside this file says what it does not cover.
set -eu

venv=${1:?usage: configure-jupyterlab.sh VENV (the directory of the notebook venv)}

# Exfiltration controls that JupyterLab can enforce by configuration: the download commands
# (File > Download, the file browser's Download and Copy Download Link, Save and Export
# Notebook As) and the extension manager's UI are disabled and locked at the venv level
# (sys_prefix), which jovyan cannot write. So is the "get Jupyter news?" prompt: with no
# egress the answer could only fail, and it should not be a question a researcher meets.
"$venv/bin/jupyter" labextension disable --level=sys_prefix \
    @jupyterlab/docmanager-extension:download \
    @jupyterlab/filebrowser-extension:download \
    @jupyterlab/notebook-extension:export \
    @jupyterlab/extensionmanager-extension:plugin \
    @jupyterlab/apputils-extension:announcements
"$venv/bin/jupyter" labextension lock --level=sys_prefix \
    @jupyterlab/docmanager-extension:download \
    @jupyterlab/filebrowser-extension:download \
    @jupyterlab/notebook-extension:export \
    @jupyterlab/extensionmanager-extension:plugin \
    @jupyterlab/apputils-extension:announcements

# Nothing that reaches for the internet: a read-only extension manager (no PyPI search or
# install), no news feed, no update check. The file must be jupyter_server_config.json itself:
# Jupyter Server reads jupyter_server_config.d/ only for the list of server extensions.
printf '%s\n' \
    '{"LabApp": {"extension_manager": "readonly", "news_url": null,' \
    ' "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"}}' \
    > "$venv/etc/jupyter/jupyter_server_config.json"
