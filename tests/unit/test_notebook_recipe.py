"""The local build of the notebook image follows images/notebook/Dockerfile, read by
provisioner.devcluster.dockerfile (no Docker engine here).

Behaviours under test:
- the recipe of the real Dockerfile: Debian suite of its base, its runtime apt packages, the
  venv, what it COPYs from the build context (the repository root: the requirements file and
  configuration script, and the project `tre` installs from), the project installed with
  --no-deps, the useradd it runs, and the whole OCI runtime config (golden: ENV with PATH
  expanded, USER, WORKDIR, ENTRYPOINT, CMD, EXPOSE);
- the local build installs the very files the Dockerfile COPYs (same bytes go into the cache
  key, so a change to `provisioner/` rebuilds the image), not copies of them, and leaves out
  what Docker's ignore file of the Dockerfile leaves out;
- fail closed: an instruction or RUN form the local build cannot follow is refused with its
  line number and the fix; a Dockerfile lacking a step is refused naming the step;
- the Debian archive the build uses is read from the machine's apt sources (deb822 and
  one-line), and no archive for the host's suite is an error naming the fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner import __version__
from provisioner.devcluster import images
from provisioner.devcluster.dockerfile import Copy, image_recipe
from provisioner.devcluster.images import (
    NOTEBOOK,
    NOTEBOOK_REF,
    DebianSources,
    apt_source_lines,
    debian_sources,
    image_archive_path,
)
from provisioner.errors import DevClusterError
from provisioner.models.settings import Settings
from provisioner.planning.storage import NOTEBOOK_GID, NOTEBOOK_UID

REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO / "images" / "notebook"
DOCKERFILE = (IMAGE_DIR / "Dockerfile").read_text()


def test_recipe_of_the_dockerfile() -> None:
    recipe = image_recipe(DOCKERFILE)

    assert recipe.base == "python:3.12.13-slim-trixie"
    assert recipe.debian_suite == "trixie"
    assert recipe.apt_packages == ("tini", "git")
    assert recipe.venv == "/opt/venv"
    assert recipe.copies == (
        Copy("images/notebook/requirements.txt", "/tmp/notebook/requirements.txt"),
        Copy("images/notebook/configure-jupyterlab.sh", "/tmp/notebook/configure-jupyterlab.sh"),
        Copy("pyproject.toml", "/tmp/tre/pyproject.toml"),
        Copy("README.md", "/tmp/tre/README.md"),
        Copy("provisioner/", "/tmp/tre/provisioner"),
    )
    assert recipe.requirements == "/tmp/notebook/requirements.txt"
    assert recipe.pip_options == ("--no-cache-dir", "--only-binary=:all:")
    assert recipe.configure_script == "/tmp/notebook/configure-jupyterlab.sh"
    assert recipe.package == "/tmp/tre"
    assert recipe.package_options == ("--no-cache-dir", "--no-deps")
    assert recipe.constraints is None
    assert recipe.node is None
    assert recipe.runtime_copies == ()
    assert recipe.create_user == (
        f"useradd --uid {NOTEBOOK_UID} --gid {NOTEBOOK_GID} --create-home --shell /bin/bash jovyan"
    )


def test_runtime_config_is_the_dockerfiles() -> None:
    assert image_recipe(DOCKERFILE).runtime_config == {
        "Env": [
            "PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8",
            "HOME=/home/jovyan",
            "SHELL=/bin/bash",
            "PIP_NO_INDEX=1",
            "PIP_DISABLE_PIP_VERSION_CHECK=1",
            "PYTHONDONTWRITEBYTECODE=1",
        ],
        "WorkingDir": "/home/jovyan",
        "ExposedPorts": {f"{Settings().notebook_port}/tcp": {}},
        "User": f"{NOTEBOOK_UID}:{NOTEBOOK_GID}",
        "Entrypoint": ["tini", "--"],
        "Cmd": ["jupyterhub-singleuser"],
    }


def test_local_build_uses_the_files_the_dockerfile_copies() -> None:
    recipe = image_recipe(DOCKERFILE)
    copies = [
        line for line in DOCKERFILE.splitlines() if line.startswith("COPY ") and "--" not in line
    ]

    assert copies == [
        "COPY images/notebook/requirements.txt images/notebook/configure-jupyterlab.sh "
        "/tmp/notebook/",
        "COPY pyproject.toml README.md /tmp/tre/",
        "COPY provisioner/ /tmp/tre/provisioner/",
    ]
    assert images.NOTEBOOK.source_dir == IMAGE_DIR
    assert images.CONTEXT_DIR == REPO
    inputs = images.image_inputs(images.NOTEBOOK, recipe)
    for name in ("requirements.txt", "configure-jupyterlab.sh", "Dockerfile"):
        assert (IMAGE_DIR / name).read_bytes() in inputs
    assert (REPO / "pyproject.toml").read_bytes() in inputs
    assert (REPO / "provisioner" / "cli" / "export.py").read_bytes() in inputs
    assert b"/tmp/tre/provisioner/cli/export.py" in inputs


def test_a_directory_copy_leaves_out_what_docker_leaves_out(tmp_path: Path) -> None:
    lines = (IMAGE_DIR / "Dockerfile.dockerignore").read_text().splitlines()
    ignored = [line for line in lines if line and not line.startswith("#")]
    tree = Copy("provisioner/", "/tmp/tre/provisioner")
    (REPO / "provisioner" / "__pycache__").mkdir(exist_ok=True)  # any Python run here makes it

    copied = [relative for relative, _ in images._copied_files(tree)]

    assert [f"**/{pattern}" for pattern in images.COPY_IGNORED] == ignored
    assert "cli/export.py" in copied
    assert "airlock/templates/export.html" in copied
    assert not [name for name in copied if "__pycache__" in name or name.endswith(".pyc")]
    images._copy_into(tmp_path, tree)
    assert (tmp_path / "tmp/tre/provisioner/cli/export.py").read_bytes() == (
        REPO / "provisioner" / "cli" / "export.py"
    ).read_bytes()


def test_image_reference_is_the_hubs_normalised(tmp_path: Path) -> None:
    from hub_config.config import NOTEBOOK_IMAGE

    assert (
        NOTEBOOK_REF
        == f"docker.io/{NOTEBOOK_IMAGE}"
        == f"docker.io/ucloud-tre/notebook:{__version__}"
    )
    path, _ = image_archive_path(NOTEBOOK, tmp_path)
    assert path.parent == tmp_path / "images"
    assert path.name.startswith(f"notebook-{__version__}-")


def test_a_changed_input_changes_the_cache_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, _ = image_archive_path(NOTEBOOK, tmp_path)
    monkeypatch.setattr(images, "BUILD_VERSION", "changed")

    assert image_archive_path(NOTEBOOK, tmp_path)[0] != before


def with_line(after: str, line: str) -> str:
    head, marker, tail = DOCKERFILE.partition(after)
    assert marker, after
    return f"{head}{marker}\n{line}\n{tail}"


@pytest.mark.parametrize(
    ("dockerfile", "refused"),
    [
        (with_line("USER 1000:100", "RUN pip install requests"), "RUN 'pip install requests'"),
        (with_line("USER 1000:100", "ADD extra.tar /opt/"), "ADD 'extra.tar /opt/'"),
        (with_line("USER 1000:100", "VOLUME /data"), "VOLUME '/data'"),
        (with_line("USER 1000:100", "CMD jupyter lab"), "use the JSON (exec) form"),
        (with_line("USER 1000:100", "ENV DEBUG"), "KEY=value"),
        (
            DOCKERFILE.replace("--no-cache-dir --only-binary=:all:", "--pre --only-binary=:all:"),
            "pip options other than",
        ),
        (
            DOCKERFILE.replace("COPY pyproject.toml README.md", "COPY ../x"),
            "of the build context only",
        ),
        (DOCKERFILE.replace("COPY provisioner/", "COPY provisioner/*.py"), "wildcards"),
        (
            DOCKERFILE.replace("COPY pyproject.toml README.md /tmp/tre/", "COPY README.md /opt/"),
            "copy into a directory under /tmp/",
        ),
        (DOCKERFILE.replace("--no-cache-dir --no-deps", "--no-cache-dir"), "with --no-deps"),
        (
            DOCKERFILE.replace("--no-cache-dir --no-deps", "--no-deps --editable"),
            "pip options other than ['--no-cache-dir', '--no-deps']",
        ),
        (DOCKERFILE.replace("slim-trixie", "slim"), "not python:<version>[-slim]-<debian suite>"),
    ],
)
def test_steps_the_local_build_cannot_follow_are_refused(dockerfile: str, refused: str) -> None:
    with pytest.raises(DevClusterError, match=r"Dockerfile line \d+: ") as error:
        image_recipe(dockerfile)

    assert refused in str(error.value)
    assert "Teach provisioner/devcluster/dockerfile.py" in str(error.value)


def test_refusal_names_the_line() -> None:
    dockerfile = with_line("USER 1000:100", "RUN curl -fsS https://x.test | sh")
    line = dockerfile.splitlines().index("RUN curl -fsS https://x.test | sh") + 1

    with pytest.raises(DevClusterError, match=rf"^Dockerfile line {line}: RUN .*Teach provisioner"):
        image_recipe(dockerfile)


def test_a_missing_step_is_named() -> None:
    without_user = "\n".join(
        line for line in DOCKERFILE.splitlines() if not line.startswith("RUN useradd")
    )

    with pytest.raises(DevClusterError, match=r"the Dockerfile lacks: RUN useradd$"):
        image_recipe(without_user)


DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.test/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.test/debian-security/
Suites: bookworm-security
Components: main
"""


def test_debian_sources_from_deb822() -> None:
    found = debian_sources({"/etc/apt/sources.list.d/debian.sources": DEB822}, "bookworm")

    assert found == DebianSources("http://mirror.test/debian", "http://mirror.test/debian-security")
    assert apt_source_lines(found, "trixie") == [
        "deb http://mirror.test/debian trixie main",
        "deb http://mirror.test/debian trixie-updates main",
        "deb http://mirror.test/debian-security trixie-security main",
    ]


def test_debian_sources_from_one_line_lists_skips_deb_src_and_disabled() -> None:
    files = {
        "sources.list": "deb-src http://src.test/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.test/debian bookworm main # why\n",
        "off.sources": "Enabled: no\nTypes: deb\nURIs: http://off.test/debian\n"
        "Suites: bookworm-security\n",
    }

    assert debian_sources(files, "bookworm") == DebianSources("http://mirror.test/debian", None)
    assert apt_source_lines(debian_sources(files, "bookworm"), "trixie") == [
        "deb http://mirror.test/debian trixie main",
        "deb http://mirror.test/debian trixie-updates main",
    ]


def test_no_debian_archive_is_an_error_naming_the_fix() -> None:
    with pytest.raises(DevClusterError, match=r"no Debian archive for 'bookworm'.*configure one"):
        debian_sources({"x.sources": DEB822.replace("bookworm ", "trixie ")}, "bookworm")
