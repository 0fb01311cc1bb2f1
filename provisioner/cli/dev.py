"""`tre dev`: the local development platform (control plane + S3 + JupyterHub) on 127.0.0.1,
optionally with a real node in namespaces of its own (`--node`, root only)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from provisioner.cli import common
from provisioner.cli.context import cli_context, new_app
from provisioner.cli.output import OutputFormat, emit
from provisioner.devcluster.cluster import DevCluster, default_state_dir

app = new_app()

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="TRE_DEV_DIR",
        help="Where the platform keeps its data, certificates and logs; yours alone: made "
        "with mode 0700, and refused if it is a symlink, another user's or theirs to change "
        "[default: <tmp>/ucloud-tre-dev-<uid>].",
        show_default=False,
    ),
]


def _cluster(state_dir: Path | None) -> DevCluster:
    return DevCluster(state_dir or default_state_dir())


def _progress(message: str) -> None:
    typer.echo(f"tre dev: {message}", err=True)


@app.command()
def up(
    state_dir: StateDir = None,
    node: Annotated[
        bool,
        typer.Option(
            "--node",
            help="Also run a real node (kubelet, containerd, runc, CNI bridge, kube-scheduler, "
            "kube-router) in its own network and mount namespaces, so pods run. Needs root and "
            "the Debian packages in provisioner/devcluster/node-packages.txt. Adds a node to a "
            "running platform too.",
        ),
    ] = False,
    hub: Annotated[
        bool,
        typer.Option(
            "--hub/--no-hub",
            help="Also install the platform (as 'tre install' does) and start JupyterHub "
            "with its proxy, signed in with a development password.",
        ),
    ] = True,
) -> None:
    """Start etcd, kube-apiserver, kube-controller-manager, S3 and JupyterHub in the
    background; with --node, a node too.

    Builds the pinned binaries on first use (about 13 min on 2 cores, cached afterwards; the
    node's about 10 min more). The hub needs the platform's objects (its ServiceAccount, the
    Workspace CRD), so with the hub this also applies what 'tre install' does (idempotent).
    Running it again while the platform is up is not an error.
    """
    cluster = _cluster(state_dir)
    cluster.up(_progress, node=node)
    # The platform's own settings: the shell's TRE_* overlaid with what this platform is (as
    # `tre dev env` prints it), so the install, the node's services and the hub (which
    # inherits them) all plan for this platform, its node included.
    from provisioner.devcluster.node_services import (
        node_settings,
        start_node_services,
        workspace_settings,
    )

    # With --node (or a node that already serves workspaces) the node runs the platform's
    # services and everything plans for it; a bare node (the node tests add one) changes
    # nothing.
    serve_on_node = node or bool(workspace_settings(cluster))
    os.environ.update({k: v for k, v in cluster.env().items() if k.startswith("TRE_")})
    if serve_on_node:
        os.environ.update(node_settings())
    _ensure_buckets(cluster)
    typer.echo(f"kubeconfig: {cluster.kubeconfig}")
    # Not in `tre dev env` on purpose: only the controller signs audit entries.
    typer.echo(f"controller: TRE_AUDIT_SIGNING_KEY_FILE={cluster.audit_signing_key_file}")
    if hub or serve_on_node:
        _install(cluster)
    if serve_on_node:
        start_node_services(cluster, common.settings(), _progress)
    if hub:
        _start_hub(cluster, in_node=serve_on_node)
    typer.echo(f'use it:     eval "$(tre dev env{_dir_flag(state_dir)})"')
    typer.echo(f"stop it:    tre dev down{_dir_flag(state_dir)}")


def _install(cluster: DevCluster) -> None:
    """What `tre install` applies: the hub needs its ServiceAccount and the Workspace CRD, the
    node's CSI driver its CSIDriver and endpoint Secret."""
    from provisioner.controller.install import install_platform
    from provisioner.kube.api import Kube
    from provisioner.kube.client import api_client

    install_platform(Kube(api_client(cluster.kubeconfig)), common.settings(), _progress)


def _start_hub(cluster: DevCluster, *, in_node: bool) -> None:
    """The hub and its proxy: on this host, or with a node inside the node's network namespace
    (pods call the hub API at the node's address, on the port their NetworkPolicy opens; a
    relay shows the proxy on this host's 127.0.0.1)."""
    from provisioner.devcluster.hub import DevHub, HubLaunch
    from provisioner.devcluster.node import NODE_IP
    from provisioner.devcluster.processes import free_port

    config = common.settings()
    dev_hub = DevHub(cluster)
    launch = HubLaunch()
    if in_node and not dev_hub.is_running():
        public = free_port()
        cluster.expose_from_node("hub-proxy-relay", public, NODE_IP, public)
        launch = HubLaunch(
            argv_prefix=tuple(cluster.node().enter_argv(mount=False)),
            bind_host=NODE_IP,
            # By address: the proxy beside the hub resolves names with this host's resolver,
            # which the node's network cannot reach (notebooks resolve the hub's Service
            # name through the node's resolver all the same).
            connect_host=NODE_IP,
            probe_host="127.0.0.1",
            public_port=public,
            hub_api_port=config.hub_api_port,
            airlock_port=config.airlock_port,
        )
    endpoints = dev_hub.up(config, _progress, launch=launch)
    typer.echo(f"hub:        {endpoints.probe_url}/")
    typer.echo(
        "sign in:    any workspace member (after 'make demo': rik.researcher, server "
        f"heart-failure-ml), password in {dev_hub.password_file}"
    )


@app.command()
def env(ctx: typer.Context, state_dir: StateDir = None) -> None:
    """Print `export` lines for KUBECONFIG, the S3 endpoint and credentials, and TRE_HUB_URL
    when the hub runs."""
    from provisioner.devcluster.hub import DevHub

    cluster = _cluster(state_dir)
    variables = {**cluster.env(), **DevHub(cluster).env()}
    fmt = cli_context(ctx).output
    if fmt is OutputFormat.TABLE:
        for key, value in variables.items():
            typer.echo(f"export {key}={shlex.quote(value)}")
    else:
        emit(variables, fmt)


@app.command()
def status(ctx: typer.Context, state_dir: StateDir = None) -> None:
    """Show each component (the node's too, named node/...): running or not, pid, log file.
    Exit code 1 if any is down."""
    components = _cluster(state_dir).status()
    rows = [
        {"component": c.name, "running": c.running, "pid": c.pid, "detail": c.detail}
        for c in components
    ]
    emit(rows, cli_context(ctx).output, ["component", "running", "pid", "detail"])
    if len(components) < 4 or not all(c.running for c in components):
        raise typer.Exit(1)


@app.command()
def down(
    state_dir: StateDir = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the state directory (data and logs).")
    ] = False,
) -> None:
    """Stop the platform (its node first) and delete its data. Stopping a stopped platform is not
    an error. The node's namespaces, iptables rules and cgroups go with it."""
    was_running = _cluster(state_dir).down(_progress, purge=not keep)
    typer.echo("stopped" if was_running else "not running")


def _ensure_buckets(cluster: DevCluster) -> None:
    """The audit bucket, with object lock, and the airlock's quarantine and egress buckets:
    creating them is an install step, not something opening the log or a release does."""
    from provisioner.airlock.release import ensure_airlock_buckets
    from provisioner.audit.log import ensure_audit_bucket
    from provisioner.storage.s3 import make_s3_client

    config = common.settings()
    endpoint = cluster.s3()
    client = make_s3_client(
        endpoint_url=endpoint.url,
        region=endpoint.region,
        access_key=endpoint.access_key,
        secret_key=endpoint.secret_key,
    )
    ensure_audit_bucket(
        client,
        config.audit_bucket,
        retention_days=config.audit_retention_days,
        owner=config.audit_bucket_owner,
    )
    _progress(f"audit bucket {config.audit_bucket!r} ready")
    ensure_airlock_buckets(client, config)
    _progress(
        f"airlock buckets {config.airlock_quarantine_bucket!r} and "
        f"{config.airlock_egress_bucket!r} ready"
    )


def _dir_flag(state_dir: Path | None) -> str:
    return f" --state-dir {shlex.quote(str(state_dir))}" if state_dir else ""
