"""Static checks of images/notebook/Dockerfile (there is no Docker engine to build it here).

Behaviours under test:
- the build is multi-stage, and every base image is pinned by tag or digest, never `latest`;
- both stages use the same base, so the venv built in the first runs in the second;
- the last USER, after the last FROM, is numeric uid:gid 1000:100 (jovyan, users), the ids
  the hub's securityContext sets (provisioner.planning.storage), and nothing switches back
  to root after it;
- nothing is piped from the network into a shell, and nothing is ADDed from a URL;
- apt installs without recommends, cleans its lists, and a comment precedes every package;
- pip installs requirements.txt, keeps no cache and takes wheels only, and every requirement
  there is pinned with `==` (the local build installs the same file); the only other install is
  this checkout's package, with --no-deps (its dependencies would bring cluster and S3 clients);
- the JupyterLab exfiltration controls are there (configure-jupyterlab.sh, which the Dockerfile
  runs on the venv and the local build runs too): the download, export and extension-manager
  plugins are disabled and locked, the extension manager is read-only, no news or update check,
  and the config is written where Jupyter Server reads it (not to jupyter_server_config.d/);
- the entry point is tini, the command jupyterhub-singleuser, the exposed port the notebook
  port of the platform settings;
- the README states what is not prevented.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from provisioner.devcluster.dockerfile import Instruction, apt_package_lines, parse
from provisioner.models.settings import Settings
from provisioner.planning.storage import NOTEBOOK_GID, NOTEBOOK_UID

IMAGE_DIR = Path(__file__).resolve().parents[2] / "images" / "notebook"
DOCKERFILE = IMAGE_DIR / "Dockerfile"
# Shared with the local build of the dev node (provisioner/devcluster/images.py).
REQUIREMENTS = IMAGE_DIR / "requirements.txt"
CONFIGURE_SCRIPT = IMAGE_DIR / "configure-jupyterlab.sh"

EXFILTRATION_PLUGINS = [
    "@jupyterlab/docmanager-extension:download",
    "@jupyterlab/filebrowser-extension:download",
    "@jupyterlab/notebook-extension:export",
    "@jupyterlab/extensionmanager-extension:plugin",
    "@jupyterlab/apputils-extension:announcements",
]


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def _of(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def _runs(instructions: list[Instruction]) -> list[Instruction]:
    return _of(instructions, "RUN")


# --- base images ------------------------------------------------------------------------------


def test_build_is_multi_stage_from_one_pinned_base(instructions: list[Instruction]) -> None:
    froms = [i.arguments.split() for i in _of(instructions, "FROM")]
    stages = {words[2].lower() for words in froms if len(words) == 3 and words[1].upper() == "AS"}
    bases = [words[0] for words in froms if words[0].lower() not in stages]

    assert len(froms) >= 2
    assert len(set(bases)) == 1, f"stages use different bases: {bases}"
    for base in bases:
        name, _, digest = base.partition("@")
        repository, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "")
        assert repository, f"{base}: no image name"
        assert tag or digest, f"{base}: pin a tag or a digest"
        assert tag != "latest", f"{base}: 'latest' is not a pin"
        assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), base
        # A patch-level tag: `3.12-slim` would move under us.
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{base}: pin the exact version"


def test_no_argument_chooses_the_base(instructions: list[Instruction]) -> None:
    assert all("$" not in i.arguments for i in _of(instructions, "FROM"))


# --- the user -----------------------------------------------------------------------------------


def test_final_user_is_numeric_non_root_jovyan(instructions: list[Instruction]) -> None:
    last_from = max(n for n, i in enumerate(instructions) if i.keyword == "FROM")
    final_stage = instructions[last_from:]
    users = _of(final_stage, "USER")

    assert users, "the final stage must set USER"
    assert users[-1].arguments == f"{NOTEBOOK_UID}:{NOTEBOOK_GID}"
    last_user = max(n for n, i in enumerate(final_stage) if i.keyword == "USER")
    assert all(i.keyword != "USER" for i in final_stage[last_user + 1 :])
    assert all("sudo" not in i.arguments for i in _runs(final_stage))


def test_jovyan_is_created_with_the_hubs_ids(instructions: list[Instruction]) -> None:
    created = [i.arguments for i in _runs(instructions) if "useradd" in i.arguments]

    assert len(created) == 1
    words = shlex.split(created[0])
    assert words[words.index("--uid") + 1] == str(NOTEBOOK_UID)
    assert words[words.index("--gid") + 1] == str(NOTEBOOK_GID)
    assert words[-1] == "jovyan"


# --- supply chain -------------------------------------------------------------------------------


PIPED_INTO_SHELL = re.compile(r"\b(curl|wget)\b[^|]*\|\s*(sudo\s+)?(ba|z|da)?sh\b")


@pytest.mark.parametrize(
    "command",
    ["curl -fsSL https://x.test/i.sh | sh", "wget -qO- https://x.test/i | sudo bash"],
)
def test_the_pipe_check_catches_curl_into_a_shell(command: str) -> None:
    assert PIPED_INTO_SHELL.search(command)


def test_nothing_is_piped_from_the_network_into_a_shell(instructions: list[Instruction]) -> None:
    for run in _runs(instructions):
        assert not PIPED_INTO_SHELL.search(run.arguments), run.arguments
    for add in _of(instructions, "ADD"):
        assert "://" not in add.arguments, f"ADD from a URL: {add.arguments}"


def test_apt_installs_commented_packages_only(instructions: list[Instruction]) -> None:
    apt_runs = [r for r in _runs(instructions) if "apt-get install" in r.arguments]

    assert apt_runs
    for run in apt_runs:
        assert "--no-install-recommends" in run.arguments
        assert "rm -rf /var/lib/apt/lists/*" in run.arguments
        assert apt_package_lines(run.raw_lines), "no packages found after apt-get install"
        assert uncommented_apt_packages(run) == []


def uncommented_apt_packages(run: Instruction) -> list[str]:
    """Packages of an `apt-get install` whose line does not follow a comment line."""
    return [
        line.removesuffix("\\").strip()
        for index, line in apt_package_lines(run.raw_lines)
        if not run.raw_lines[index - 1].strip().startswith("#")
    ]


def requirement_lines() -> list[str]:
    lines = [line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines()]
    return [line for line in lines if line]


def test_pip_installs_the_requirements_file_as_wheels(instructions: list[Instruction]) -> None:
    pip_runs = [r for r in _runs(instructions) if re.search(r"\bpip install\b", r.arguments)]

    assert len(pip_runs) == 2
    assert pip_runs[1].arguments == "/opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/tre"
    words = shlex.split(pip_runs[0].arguments)
    assert "--no-cache-dir" in words
    assert "--only-binary=:all:" in words
    assert words[words.index("--requirement") + 1] == "/tmp/notebook/requirements.txt"
    assert [w for w in words[words.index("install") + 1 :] if not w.startswith("-")] == [
        "/tmp/notebook/requirements.txt"
    ], "every package comes from requirements.txt, the list the local build installs too"


def test_requirements_are_pinned() -> None:
    requirements = requirement_lines()

    assert requirements
    for requirement in requirements:
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][0-9A-Za-z.]*", requirement), requirement


def test_singleuser_matches_the_hub_version() -> None:
    from jupyterhub import __version__ as hub_version

    assert f"jupyterhub=={hub_version}" in requirement_lines()


# --- JupyterLab controls ------------------------------------------------------------------------


def script_commands() -> list[str]:
    """The configuration script's commands, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", CONFIGURE_SCRIPT.read_text())
    return [line.strip() for line in text.splitlines() if line.strip()[:1] not in ("", "#")]


def test_the_configuration_script_runs_on_the_venv(instructions: list[Instruction]) -> None:
    runs = [r.arguments for r in _runs(instructions) if "configure-jupyterlab.sh" in r.arguments]

    assert runs == ["sh /tmp/notebook/configure-jupyterlab.sh /opt/venv"]
    assert "set -eu" in script_commands(), "a failing step must fail the build"


def test_download_export_and_extension_manager_are_disabled_and_locked() -> None:
    commands = [shlex.split(c) for c in script_commands() if "labextension" in c]
    by_action = {words[words.index("labextension") + 1]: words for words in commands}

    for action in ("disable", "lock"):
        words = by_action[action]
        assert words[0] == "$venv/bin/jupyter"
        assert "--level=sys_prefix" in words, f"{action}: at the venv level jovyan cannot write"
        assert set(EXFILTRATION_PLUGINS) <= set(words), f"{action}: missing plugins"


def test_lab_makes_no_internet_calls_and_installs_nothing(instructions: list[Instruction]) -> None:
    text = " ".join(script_commands())

    assert '"extension_manager": "readonly"' in text
    assert '"news_url": null' in text
    assert '"check_for_updates_class": "jupyterlab.NeverCheckForUpdate"' in text
    # Jupyter Server reads jupyter_server_config.d/ only for its extension list.
    assert '> "$venv/etc/jupyter/jupyter_server_config.json"' in text
    env = " ".join(i.arguments for i in _of(instructions, "ENV"))
    assert "PIP_NO_INDEX=1" in env


# --- start-up -----------------------------------------------------------------------------------


def test_entrypoint_command_and_port(instructions: list[Instruction]) -> None:
    (entrypoint,) = _of(instructions, "ENTRYPOINT")
    (cmd,) = _of(instructions, "CMD")
    (expose,) = _of(instructions, "EXPOSE")

    assert entrypoint.arguments == '["tini", "--"]'
    assert cmd.arguments == '["jupyterhub-singleuser"]'
    assert expose.arguments == str(Settings().notebook_port)


def test_readme_says_what_is_not_prevented() -> None:
    readme = (IMAGE_DIR / "README.md").read_text()

    assert "**Not prevented**" in readme
    assert "/files/" in readme
    for plugin in EXFILTRATION_PLUGINS:
        assert plugin in readme


# --- the parser itself ----------------------------------------------------------------------------


def test_parser_drops_comments_inside_continuations() -> None:
    (run,) = parse("RUN apt-get install \\\n    # why\n    tini \\\n && true\n")

    assert run.arguments == "apt-get install tini && true"
    assert run.raw_lines[1].strip() == "# why"
    assert apt_package_lines(run.raw_lines) == [(2, "tini \\")]
    assert uncommented_apt_packages(run) == []


def test_apt_check_catches_a_package_without_a_comment() -> None:
    (run,) = parse("RUN apt-get install \\\n    # why\n    tini \\\n    curl \\\n && true\n")

    assert uncommented_apt_packages(run) == ["curl"]
