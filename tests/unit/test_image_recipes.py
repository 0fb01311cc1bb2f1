"""The platform's own images (images/platform, images/hub) have one definition each, their
Dockerfile, and the local build follows it (provisioner.devcluster.dockerfile, images).

Behaviours under test:
- each Dockerfile's recipe, golden: base, apt packages, the files it COPYs (requirements,
  requirements.lock as constraints, the project), the project installed with --no-deps, the
  user with the chart's uid/gid 10001, the node stage of the hub (`npm ci` of
  package-lock.json) and the runtime COPY of the hub's config file, the whole runtime config;
- the images are the chart's: references equal the chart's default images.tre / images.hub
  (and images.proxy is the hub image, which carries the proxy the chart's command runs),
  the hub's config file is at the chart's hub.configFile, the user is the chart's runAsUser;
- pins: every pin of each requirements.txt is requirements.lock's; the platform's names every
  runtime dependency of pyproject.toml and tornado; the hub's names the `hub` extra; the node
  base's Debian release is the python base's;
- the local build takes the same inputs: every file any stage COPYs (the lock, package-lock.json,
  the config file) is in the cache key; each image has the notebook's ignore file;
- static, as tests/unit/test_images.py checks the notebook's: every base pinned to a patch
  version (never `latest`, no ARG), a comment before every apt package, nothing piped into a
  shell, every requirement pinned with `==`;
- fail closed: a node stage out of shape, an npm option, a runtime COPY out of the context, a
  constraints file not copied in, stages in another order are refused naming the line.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from provisioner import __version__
from provisioner.chart.values import default_values
from provisioner.devcluster import images
from provisioner.devcluster.dockerfile import Copy, NodeStage, image_recipe, parse
from provisioner.devcluster.images import HUB, LOCAL_IMAGES, NOTEBOOK, PLATFORM, LocalImage
from provisioner.errors import DevClusterError
from tests.unit.test_images import PIPED_INTO_SHELL, uncommented_apt_packages

REPO = Path(__file__).resolve().parents[2]
CHART_UID = "10001"  # helm/ucloud-tre/templates/_helpers.tpl, tre.podSecurityContext
TRE = (
    Copy("pyproject.toml", "/tmp/tre/pyproject.toml"),
    Copy("README.md", "/tmp/tre/README.md"),
    Copy("provisioner/", "/tmp/tre/provisioner"),
)
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def pins(path: Path) -> dict[str, str]:
    pairs = [line.split("#")[0].strip().split("==") for line in path.read_text().splitlines()]
    return {
        name.lower().replace("_", "-"): version
        for name, version in (p for p in pairs if len(p) == 2)
    }


LOCK = pins(REPO / "requirements.lock")


def test_platform_recipe() -> None:
    recipe = image_recipe(PLATFORM.dockerfile.read_text())

    assert recipe.base == "python:3.12.13-slim-trixie"
    assert recipe.apt_packages == ("tini",)
    assert recipe.copies == (
        Copy("images/platform/requirements.txt", "/tmp/platform/requirements.txt"),
        Copy("requirements.lock", "/tmp/platform/requirements.lock"),
        *TRE,
    )
    assert recipe.requirements == "/tmp/platform/requirements.txt"
    assert recipe.constraints == "/tmp/platform/requirements.lock"
    assert recipe.pip_options == ("--no-cache-dir", "--only-binary=:all:")
    assert recipe.configure_script is None
    assert (recipe.package, recipe.package_options) == ("/tmp/tre", ("--no-cache-dir", "--no-deps"))
    assert recipe.node is None
    assert recipe.runtime_copies == ()
    assert recipe.create_user == (
        f"useradd --uid {CHART_UID} --user-group --no-create-home --home-dir /nonexistent "
        "--shell /usr/sbin/nologin tre"
    )
    assert recipe.runtime_config == {
        "Env": [
            f"PATH=/opt/venv/bin:{BASE_PATH}",
            "LANG=C.UTF-8",
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
        ],
        "User": f"{CHART_UID}:{CHART_UID}",
        "Entrypoint": ["tini", "--"],
        "Cmd": ["tre", "--help"],
    }


def test_hub_recipe() -> None:
    recipe = image_recipe(HUB.dockerfile.read_text())
    config_file = default_values()["hub"]["configFile"]

    assert recipe.apt_packages == ("tini", "nodejs")
    assert recipe.copies == (
        Copy("images/hub/requirements.txt", "/tmp/hub/requirements.txt"),
        Copy("requirements.lock", "/tmp/hub/requirements.lock"),
        *TRE,
        Copy("hub_config/", "/tmp/tre/hub_config"),
    )
    assert recipe.constraints == "/tmp/hub/requirements.lock"
    assert recipe.configure_script is None
    assert recipe.node == NodeStage(
        base="node:20.19.2-trixie-slim",
        directory="/opt/proxy",
        copies=(
            Copy("package.json", "/opt/proxy/package.json"),
            Copy("package-lock.json", "/opt/proxy/package-lock.json"),
        ),
        npm_options=("--omit=dev", "--ignore-scripts"),
    )
    assert recipe.runtime_copies == (Copy("hub_config/jupyterhub_config.py", config_file),)
    assert config_file == "/opt/ucloud-tre/hub_config/jupyterhub_config.py"
    assert recipe.create_user.startswith(f"useradd --uid {CHART_UID} --user-group ")
    assert recipe.runtime_config == {
        "Env": [
            f"PATH=/opt/venv/bin:/opt/proxy/node_modules/.bin:{BASE_PATH}",
            "LANG=C.UTF-8",
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
        ],
        "WorkingDir": "/srv/jupyterhub",
        "ExposedPorts": {"8081/tcp": {}, "8000/tcp": {}, "8001/tcp": {}},
        "User": f"{CHART_UID}:{CHART_UID}",
        "Entrypoint": ["tini", "--"],
        "Cmd": ["jupyterhub", "--config", config_file],
    }


@pytest.mark.parametrize(("image", "key"), [(PLATFORM, "tre"), (HUB, "hub")])
def test_references_are_the_charts_defaults(image: LocalImage, key: str) -> None:
    chart = default_values()["images"][key]

    assert image.ref == f"docker.io/{chart['repository']}:{chart['tag']}"
    assert chart["tag"] == __version__


def test_the_charts_proxy_is_the_hub_image_which_carries_it() -> None:
    chart = default_values()["images"]
    recipe = image_recipe(HUB.dockerfile.read_text())
    path = next(e for e in recipe.runtime_config["Env"] if e.startswith("PATH="))
    hub_yaml = (REPO / "helm" / "ucloud-tre" / "templates" / "hub.yaml").read_text()

    assert chart["proxy"] == chart["hub"]
    assert recipe.node is not None
    assert f"{recipe.node.directory}/node_modules/.bin" in path.split("=", 1)[1].split(":")
    assert "command:\n        - configurable-http-proxy\n" in hub_yaml


def test_every_image_of_images_is_built_locally() -> None:
    with_dockerfile = {path.parent.name for path in (REPO / "images").glob("*/Dockerfile")}

    assert (
        {image.name for image in LOCAL_IMAGES}
        == with_dockerfile
        == {"notebook", "platform", "hub", "dns", "gate"}
    )
    assert len({image.ref for image in LOCAL_IMAGES}) == len(LOCAL_IMAGES)


@pytest.mark.parametrize("image", [PLATFORM, HUB])
def test_requirements_are_pinned_as_the_lock(image: LocalImage) -> None:
    wanted = pins(image.source_dir / "requirements.txt")

    assert wanted
    assert {name: LOCK.get(name) for name in wanted} == wanted


def runtime_dependencies(extra: str | None = None) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {re.split(r"[<>=!\[ ]", spec)[0].lower() for spec in listed}


def test_platform_requirements_are_the_runtime_dependencies_and_tornado() -> None:
    wanted = set(pins(PLATFORM.source_dir / "requirements.txt"))

    assert wanted == runtime_dependencies() | {"tornado"}


def test_hub_requirements_have_the_hub_extra() -> None:
    assert runtime_dependencies("hub") <= set(pins(HUB.source_dir / "requirements.txt"))


@pytest.mark.parametrize("image", [PLATFORM, HUB])
def test_every_copied_file_is_an_input_of_the_local_build(image: LocalImage) -> None:
    recipe = image_recipe(image.dockerfile.read_text())
    inputs = images.image_inputs(image, recipe)

    for copy in recipe.all_copies:
        for relative, file in images._copied_files(copy):
            assert file.read_bytes() in inputs, copy
            assert f"{copy.target}/{relative}".encode() in inputs
    assert (REPO / "requirements.lock").read_bytes() in inputs
    assert image.dockerfile.read_bytes() in inputs
    assert (
        (image.source_dir / "Dockerfile.dockerignore")
        .read_text()
        .endswith("**/__pycache__\n**/*.pyc\n")
    )


def test_hub_inputs_include_the_proxy_lock_and_the_config_file() -> None:
    inputs = images.image_inputs(HUB, image_recipe(HUB.dockerfile.read_text()))

    assert (REPO / "package-lock.json").read_bytes() in inputs
    assert (REPO / "hub_config" / "jupyterhub_config.py").read_bytes() in inputs


def test_archive_paths_differ_by_image(tmp_path: Path) -> None:
    paths = [images.image_archive_path(image, tmp_path)[0] for image in LOCAL_IMAGES]

    assert [path.name.split("-")[0] for path in paths] == [
        "notebook",
        "platform",
        "hub",
        "dns",
        "gate",
    ]
    assert NOTEBOOK.ref == images.NOTEBOOK_REF


@pytest.mark.parametrize("image", [PLATFORM, HUB])
def test_dockerfile_is_pinned_commented_and_fetches_nothing_into_a_shell(image: LocalImage) -> None:
    instructions = parse(image.dockerfile.read_text())
    bases = [i.arguments.split()[0] for i in instructions if i.keyword == "FROM"]
    runs = [i for i in instructions if i.keyword == "RUN"]
    (apt,) = [run for run in runs if "apt-get install" in run.arguments]
    requirements = [
        line.split("#")[0].strip()
        for line in (image.source_dir / "requirements.txt").read_text().splitlines()
    ]

    assert all(re.fullmatch(r"[a-z]+:\d+\.\d+\.\d+-[a-z-]+", base) for base in bases), bases
    assert uncommented_apt_packages(apt) == []
    assert not [run.arguments for run in runs if PIPED_INTO_SHELL.search(run.arguments)]
    assert not [i for i in instructions if i.keyword == "ADD"]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9a-z.]*", r) for r in requirements if r)


HUB_DOCKERFILE = HUB.dockerfile.read_text()


@pytest.mark.parametrize(
    ("dockerfile", "refused"),
    [
        (HUB_DOCKERFILE.replace("node:20.19.2-trixie-slim", "node:20-bookworm"), "node stage"),
        (
            HUB_DOCKERFILE.replace("npm ci --omit=dev", "npm ci --omit=dev --legacy-peer-deps"),
            "npm options other than",
        ),
        (HUB_DOCKERFILE.replace("RUN npm ci", "RUN npm install"), "RUN npm ci [options]"),
        (
            HUB_DOCKERFILE.replace("COPY package.json package-lock.json ./", "COPY . ./"),
            "COPY package.json package-lock.json ./",
        ),
        (
            HUB_DOCKERFILE.replace(
                "COPY hub_config/jupyterhub_config.py /opt", "COPY ../jupyterhub_config.py /opt"
            ),
            "of the build context only",
        ),
        (
            HUB_DOCKERFILE.replace("/opt/ucloud-tre/hub_config/\n", "opt/ucloud-tre/hub_config/\n"),
            "copy into an absolute directory",
        ),
        (
            HUB_DOCKERFILE.replace(
                "COPY images/hub/requirements.txt requirements.lock",
                "COPY images/hub/requirements.txt",
            ),
            "the constraints file is not COPYed in before",
        ),
    ],
)
def test_steps_the_local_build_cannot_follow_are_refused(dockerfile: str, refused: str) -> None:
    assert dockerfile != HUB_DOCKERFILE
    with pytest.raises(DevClusterError, match=r"Dockerfile line \d+: ") as error:
        image_recipe(dockerfile)

    assert refused in str(error.value)


@pytest.mark.parametrize(
    "dockerfile",
    [
        HUB_DOCKERFILE.replace(" AS node", " AS proxy"),
        HUB_DOCKERFILE.replace(" AS node", " node"),
        HUB_DOCKERFILE.replace(
            "FROM python:3.12.13-slim-trixie\n",
            "FROM --platform=linux/amd64 python:3.12.13-slim-trixie\n",
        ),
        HUB_DOCKERFILE.replace(
            "FROM python:3.12.13-slim-trixie AS build", "FROM python:3.12.13-slim-trixie"
        ),
    ],
)
def test_stages_out_of_shape_are_refused(dockerfile: str) -> None:
    assert dockerfile != HUB_DOCKERFILE
    with pytest.raises(DevClusterError, match="'FROM <python base> AS build', optionally"):
        image_recipe(dockerfile)


def test_a_node_stage_not_taken_is_named() -> None:
    without = HUB_DOCKERFILE.replace("COPY --from=node /opt/proxy /opt/proxy\n", "")

    with pytest.raises(DevClusterError, match=r"lacks: COPY --from=node <dir> <dir>"):
        image_recipe(without)
