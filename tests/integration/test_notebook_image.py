"""The notebook image built on this machine (mmdebstrap + pip, no Docker), unpacked and run in a
chroot as jovyan. Needs root and network access to the Debian and PyPI archives for the first
build (about 4 min on 2 cores); later runs find the archive in the cache.

Behaviours under test:
- the archive is a valid OCI image layout named docker.io/ucloud-tre/notebook:<version>, whose
  runtime config is the Dockerfile's (user, env, workdir, entry point, command, port);
- the venv holds exactly the versions requirements.txt pins (pip freeze as uid 1000), and
  `jupyterhub-singleuser --version` runs as jovyan and is the hub's version;
- tini and git are there, as the Dockerfile's runtime stage installs them;
- `tre` is there, this checkout's version, and its export command runs as jovyan, while
  the Kubernetes client, boto3 and botocore are not installed at all (cryptography is, but
  for jupyterhub, through certipy; `tre`'s export path never imports it:
  tests/unit/test_export_in_notebook.py);
- jovyan is uid 1000, gid 100, home /home/jovyan (owned by jovyan), shell /bin/bash;
- jovyan cannot change the venv or the Jupyter configuration (owned by root);
- the JupyterLab lock-down is in place: the four plugins disabled and locked at the venv level,
  jupyter_server_config.json as configure-jupyterlab.sh writes it;
- nothing of the build host or the build stays in the image: no hostname, resolver or apt
  sources, no staged wheels or sources (the build stage's /tmp is empty).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from jupyterhub import __version__ as hub_version

from provisioner import __version__
from provisioner.devcluster.binaries import cache_dir
from provisioner.devcluster.dockerfile import image_recipe
from provisioner.devcluster.images import (
    NOTEBOOK,
    NOTEBOOK_REF,
    ArchiveSummary,
    build_image,
    read_oci_archive,
    run_in_rootfs,
)
from provisioner.errors import DevClusterError
from provisioner.planning.storage import NOTEBOOK_GID, NOTEBOOK_UID

pytestmark = pytest.mark.timeout(1800)  # a cold build downloads and installs ~1 GB

JOVYAN = f"{NOTEBOOK_UID}:{NOTEBOOK_GID}"
LOCKED_PLUGINS = {
    "@jupyterlab/docmanager-extension:download",
    "@jupyterlab/filebrowser-extension:download",
    "@jupyterlab/notebook-extension:export",
    "@jupyterlab/extensionmanager-extension:plugin",
    "@jupyterlab/apputils-extension:announcements",
}


@pytest.fixture(scope="module")
def notebook_archive() -> Path:
    return build_image(NOTEBOOK, cache_dir(), lambda message: print(f"[images] {message}"))


@pytest.fixture(scope="module")
def summary(notebook_archive: Path) -> ArchiveSummary:
    return read_oci_archive(notebook_archive)


@pytest.fixture(scope="module")
def rootfs(
    notebook_archive: Path, summary: ArchiveSummary, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The image's root file system as containerd would unpack it (one layer)."""
    (layer,) = summary.layer_digests
    root = tmp_path_factory.mktemp("notebook-rootfs")
    blob = f"blobs/sha256/{layer.removeprefix('sha256:')}"
    with subprocess.Popen(["tar", "-xOf", notebook_archive, blob], stdout=subprocess.PIPE) as out:
        subprocess.run(["tar", "-x", "--numeric-owner", "-C", root], stdin=out.stdout, check=True)
    assert out.returncode == 0
    return root


def as_jovyan(rootfs: Path, summary: ArchiveSummary, *command: str) -> str:
    """Run as the image's user with the image's environment, the way the runtime would."""
    env = dict(item.split("=", 1) for item in summary.config["config"]["Env"])
    return run_in_rootfs(rootfs, list(command), " ".join(command), user=JOVYAN, env=env)


def pins() -> dict[str, str]:
    lines = (NOTEBOOK.source_dir / "requirements.txt").read_text().splitlines()
    pairs = [line.split("#")[0].strip().split("==") for line in lines]
    return {name.lower(): version for name, version in (p for p in pairs if len(p) == 2)}


def test_archive_is_named_and_configured_as_the_dockerfile(summary: ArchiveSummary) -> None:
    recipe = image_recipe((NOTEBOOK.source_dir / "Dockerfile").read_text())

    assert summary.ref == NOTEBOOK_REF
    assert summary.config["config"] == recipe.runtime_config
    assert summary.config["config"]["User"] == JOVYAN


def test_venv_has_exactly_the_pinned_versions(rootfs: Path, summary: ArchiveSummary) -> None:
    frozen = as_jovyan(rootfs, summary, "pip", "freeze")
    installed = dict(line.lower().split("==") for line in frozen.splitlines() if "==" in line)

    assert pins(), "no pins read"
    for name, version in pins().items():
        assert installed.get(name) == version, (
            f"{name}: pinned {version}, installed {installed.get(name)}"
        )


def test_singleuser_runs_as_jovyan_at_the_hubs_version(
    rootfs: Path, summary: ArchiveSummary
) -> None:
    assert as_jovyan(rootfs, summary, "jupyterhub-singleuser", "--version").strip() == hub_version


def test_system_packages_of_the_runtime_stage(rootfs: Path, summary: ArchiveSummary) -> None:
    assert "tini version" in as_jovyan(rootfs, summary, "tini", "--version")
    assert as_jovyan(rootfs, summary, "git", "--version").startswith("git version ")


def test_tre_export_runs_without_cluster_or_s3_clients(
    rootfs: Path, summary: ArchiveSummary
) -> None:
    assert as_jovyan(rootfs, summary, "tre", "--version").strip() == f"tre {__version__}"
    assert "--description" in as_jovyan(rootfs, summary, "tre", "export", "submit", "--help")
    missing = as_jovyan(
        rootfs,
        summary,
        "python",
        "-c",
        "import importlib.util as u; "
        "print([m for m in ('kubernetes', 'boto3', 'botocore') if u.find_spec(m)])",
    )
    assert missing.strip() == "[]"


def test_jovyan_account(rootfs: Path) -> None:
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (rootfs / "etc/passwd").read_text().splitlines()
    }

    assert passwd["jovyan"][2:4] == [str(NOTEBOOK_UID), str(NOTEBOOK_GID)]
    assert passwd["jovyan"][5:] == ["/home/jovyan", "/bin/bash"]
    home = (rootfs / "home/jovyan").stat()
    assert (home.st_uid, home.st_gid) == (NOTEBOOK_UID, NOTEBOOK_GID)


@pytest.mark.parametrize(
    "path",
    ["/opt/venv/lib/x", "/opt/venv/etc/jupyter/labconfig/page_config.json", "/opt/venv/bin/x"],
)
def test_jovyan_cannot_change_the_venv(rootfs: Path, summary: ArchiveSummary, path: str) -> None:
    with pytest.raises(DevClusterError, match="Permission denied"):
        as_jovyan(rootfs, summary, "sh", "-c", f"echo x >> {path}")


def test_jupyterlab_lock_down(rootfs: Path) -> None:
    etc = rootfs / "opt/venv/etc/jupyter"
    page_config = json.loads((etc / "labconfig/page_config.json").read_text())
    server_config = json.loads((etc / "jupyter_server_config.json").read_text())

    assert {k for k, v in page_config["disabledExtensions"].items() if v} == LOCKED_PLUGINS
    assert {k for k, v in page_config["lockedExtensions"].items() if v} == LOCKED_PLUGINS
    assert server_config == {
        "LabApp": {
            "extension_manager": "readonly",
            "news_url": None,
            "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
        }
    }


def test_nothing_of_the_build_stays(rootfs: Path) -> None:
    for leftover in ("etc/hostname", "etc/resolv.conf", "etc/apt/sources.list"):
        assert not (rootfs / leftover).exists(), leftover
    assert list((rootfs / "tmp").iterdir()) == []
    assert list((rootfs / "etc/apt/sources.list.d").iterdir()) == []
    assert list((rootfs / "var/lib/apt/lists").glob("*_Packages")) == []
