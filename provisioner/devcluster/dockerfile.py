"""What an image's Dockerfile says, read so that the local build follows it.

``images/<name>/Dockerfile`` is the one definition of each of the platform's images (notebook,
platform, hub). There is no Docker engine on the development machines, so the dev node's copies
are built from Debian, PyPI and npm packages by ``provisioner.devcluster.images``; this module
turns a Dockerfile into the ``ImageRecipe`` that build follows: the Debian suite of the base,
the system packages, the venv, the files it copies in from the build context (the repository
root), the requirements file (and the constraints file pinning what it pulls in) and an
optional configuration script among them, the project (`tre`) it installs without its
dependencies, an optional Node.js stage that installs a package-lock.json with `npm ci`, the
files the runtime stage copies in, the user it creates, and the runtime config (ENV, USER,
WORKDIR, ENTRYPOINT, CMD, EXPOSE).

The shape every Python image follows: a stage ``build`` on the same python base as the runtime
stage (the venv), optionally a stage ``node`` on the official Node.js image of the same Debian
release (``npm ci`` of a lock file), and the runtime stage, last, that takes the venv (and the
node stage's directory) and nothing else from them.

The other shape, a Go image (images/dns, ``go_image_recipe``): a stage ``build`` on the
official Go image that COPYs one Go module, works in it and runs one ``go build`` line (whose
environment and flags the local build passes to this machine's Go as written), and a ``FROM
scratch`` runtime that takes the binary and has only runtime config. ``recipe_of`` tells the
two apart by the first FROM.

Fail closed: an instruction this module does not understand is an error naming its line and
the fix, so a change to the Dockerfile can never be silently missing from the local build.
Pure: text in, recipe out.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from provisioner.errors import DevClusterError

# The environment of the base the Dockerfile starts from that the local build must supply
# itself: Debian's default PATH (the python image puts /usr/local/bin first; our Python is
# Debian's, in /usr/bin) and the python image's LANG.
LOCAL_BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    arguments: str  # continuation lines joined, comment lines removed
    raw_lines: tuple[str, ...]  # as written, comments inside continuations included
    line: int  # 1-based line of the keyword, for error messages


def parse(text: str) -> list[Instruction]:
    """Dockerfile instructions. Comment lines, also inside a continuation, are not part of
    the instruction (as Docker itself treats them)."""
    instructions: list[Instruction] = []
    raw: list[str] = []
    parts: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not raw and (not stripped or stripped.startswith("#")):
            continue
        if not raw:
            start = number
        raw.append(line)
        if stripped.startswith("#"):
            continue
        continued = stripped.endswith("\\")
        parts.append(stripped.removesuffix("\\").strip())
        if not continued:
            keyword, _, first = parts[0].partition(" ")
            arguments = " ".join([first, *parts[1:]]).strip()
            instructions.append(Instruction(keyword.upper(), arguments, tuple(raw), start))
            raw, parts = [], []
    if raw:
        raise DevClusterError(f"Dockerfile line {start}: the file ends inside a continuation")
    return instructions


def apt_package_lines(raw_lines: tuple[str, ...]) -> list[tuple[int, str]]:
    """(index, line) of each package line after ``apt-get install``, one package a line."""
    start = next((n for n, line in enumerate(raw_lines) if "apt-get install" in line), None)
    if start is None:
        raise DevClusterError("no 'apt-get install' in this instruction")
    if not raw_lines[start].rstrip().endswith("\\"):
        raise DevClusterError("list apt packages one a line after 'apt-get install ... \\'")
    found: list[tuple[int, str]] = []
    for index in range(start + 1, len(raw_lines)):
        line = raw_lines[index].strip()
        if line.startswith("#"):
            continue
        if line.startswith("&&") or not line:
            break
        name = line.removesuffix("\\").strip()
        if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*(=[^\s]+)?", name):
            raise DevClusterError(f"one apt package a line, got: {line}")
        found.append((index, line))
    return found


@dataclass(frozen=True)
class Copy:
    """One source of a COPY: a file, or a directory (written with a trailing '/', whose
    contents land in `target`, as Docker copies a directory)."""

    source: str  # relative to the build context (the repository root), e.g. provisioner/
    target: str  # the file or directory it becomes in the build stage, e.g. /tmp/tre/provisioner

    @property
    def is_directory(self) -> bool:
        return self.source.endswith("/")


@dataclass(frozen=True)
class NodeStage:
    """``FROM node:<version>-<suite>-slim AS node``, ``WORKDIR <directory>``, ``COPY
    package.json package-lock.json ./``, ``RUN npm ci <options>``: the lock file's packages
    installed into `directory`, which the runtime stage copies whole."""

    base: str  # e.g. node:20.19.2-trixie-slim
    directory: str  # e.g. /opt/proxy
    copies: tuple[Copy, ...]  # the package.json and package-lock.json it installs from
    npm_options: tuple[str, ...]  # as the Dockerfile passes them, e.g. --omit=dev


@dataclass(frozen=True)
class ImageRecipe:
    base: str  # the Dockerfile's base image, e.g. python:3.12.13-slim-trixie
    debian_suite: str  # the Debian release that base is built on, e.g. trixie
    apt_packages: tuple[str, ...]  # of the runtime stage, as the Dockerfile lists them
    venv: str  # /opt/venv
    copies: tuple[Copy, ...]  # what the build stage COPYs in from the build context, in order
    requirements: str  # in the build stage, e.g. /tmp/notebook/requirements.txt
    constraints: str | None  # pip --constraint file in the build stage, e.g. the lock
    pip_options: tuple[str, ...]  # as the Dockerfile passes them, e.g. --only-binary=:all:
    configure_script: str | None  # in the build stage, e.g. /tmp/notebook/configure-jupyterlab.sh
    package: str  # the project directory installed without dependencies, e.g. /tmp/tre
    package_options: tuple[str, ...]  # as the Dockerfile passes them: --no-deps, ...
    node: NodeStage | None  # the optional `npm ci` stage
    runtime_copies: tuple[Copy, ...]  # what the runtime stage COPYs in from the build context
    create_user: str  # the shell command that creates the image's user, run as written
    runtime_config: dict[str, object] = field(hash=False)  # OCI image config "config" section

    def source_of(self, target: str) -> str:
        """The build-context path COPYed to `target` (a file the build stage uses)."""
        return next(c.source for c in self.copies if c.target == target)

    @property
    def all_copies(self) -> tuple[Copy, ...]:
        """Every build-context path any stage COPYs, in the Dockerfile's order of stages."""
        node_copies = self.node.copies if self.node else ()
        return (*self.copies, *node_copies, *self.runtime_copies)


# python:<x.y.z>[-slim]-<suite>: the official Python image on that Debian release.
_PYTHON_BASE = re.compile(r"python:(?P<version>\d+\.\d+\.\d+)(?:-slim)?-(?P<suite>(?!slim$)[a-z]+)")
# The RUN forms the local build knows how to reproduce; anything else is refused.
_VENV = re.compile(r"python3? -m venv (?P<venv>/\S+)")
_PIP = re.compile(
    r"(?P<venv>/\S+)/bin/pip install (?P<options>(?:--(?!constraint)\S+ )*)"
    r"(?:--constraint (?P<constraints>\S+) )?--requirement (?P<file>\S+)"
)
# The official Node.js image on the same Debian release, and the one command run in it.
_NODE_BASE = re.compile(r"node:(?P<version>\d+\.\d+\.\d+)-(?P<suite>[a-z]+)-slim")
_NPM_CI = re.compile(r"npm ci(?P<options>(?: --[a-z-]+(?:=[a-z]+)?)*)")
_NPM_OPTIONS = {"--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund"}
_NODE_FILES = ("package.json", "package-lock.json")
# The project itself, without its dependencies (the requirements file brings what it needs).
_PACKAGE = re.compile(r"(?P<venv>/\S+)/bin/pip install (?P<options>(?:--\S+ )*)(?P<project>/\S+)")
_SCRIPT = re.compile(r"sh (?P<script>/\S+) (?P<venv>/\S+)")
_APT = re.compile(
    r"apt-get update && apt-get install --yes --no-install-recommends [a-z0-9.+= -]+"
    r" && rm -rf /var/lib/apt/lists/\*"
)
_USERADD = re.compile(r"useradd( --?[a-z-]+( [\w/.-]+)?)* [a-z_][a-z0-9_-]*")
# pip options that do not change which packages end up installed.
_PIP_OPTIONS = {"--no-cache-dir", "--only-binary=:all:"}
_PACKAGE_OPTIONS = {"--no-cache-dir", "--no-deps"}
# A build-context path as COPY may name it: relative, no '..', no wildcard; a directory ends in /.
_CONTEXT_PATH = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)*[A-Za-z0-9_][A-Za-z0-9_.-]*/?")
# The build stage's scratch: COPY targets must be here, because the runtime stage takes only the
# venv from the build stage; the local build empties it before packing.
BUILD_SCRATCH = "/tmp/"  # noqa: S108 - a directory of the image being built, not of this host


def _refuse(instruction: Instruction, why: str) -> DevClusterError:
    return DevClusterError(
        f"Dockerfile line {instruction.line}: {instruction.keyword} {instruction.arguments!r}: "
        f"{why}; the local build of the dev node cannot follow it. Teach "
        "provisioner/devcluster/dockerfile.py (and images.py) this step, or write it in a form "
        "they know"
    )


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m[1], ""), value)


def _env_pairs(instruction: Instruction) -> list[tuple[str, str]]:
    pairs = []
    for word in shlex.split(instruction.arguments):
        key, equals, value = word.partition("=")
        if not equals:
            raise _refuse(instruction, "write ENV as KEY=value pairs")
        pairs.append((key, value))
    return pairs


def _json_list(instruction: Instruction) -> list[str]:
    try:
        value = json.loads(instruction.arguments)
    except json.JSONDecodeError:
        value = None
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise _refuse(instruction, "use the JSON (exec) form")
    return value


def _config_step(instruction: Instruction, config: dict[str, object]) -> bool:
    """Record a runtime-config instruction (WORKDIR, USER, EXPOSE, ENTRYPOINT, CMD) in the OCI
    image config's `config`; False for any other instruction."""
    keyword, arguments = instruction.keyword, instruction.arguments
    if keyword == "WORKDIR":
        config["WorkingDir"] = arguments
    elif keyword == "USER":
        config["User"] = arguments
    elif keyword == "EXPOSE":
        config["ExposedPorts"] = {
            (port if "/" in port else f"{port}/tcp"): {} for port in arguments.split()
        }
    elif keyword == "ENTRYPOINT":
        config["Entrypoint"] = _json_list(instruction)
    elif keyword == "CMD":
        config["Cmd"] = _json_list(instruction)
    else:
        return False
    return True


def _stages(instructions: list[Instruction]) -> dict[str, str]:
    """Base of each stage by role: ``build``, optionally ``node``, and ``runtime`` (the last,
    unnamed), checked against the shapes the local build knows."""
    froms = [i for i in instructions if i.keyword == "FROM"]
    words = [f.arguments.split() for f in froms]
    names = [w[2] if len(w) == 3 and w[1].upper() == "AS" else "" for w in words]
    shapes_known = all(len(w) == 1 or (len(w) == 3 and w[1].upper() == "AS") for w in words)
    if (
        not froms
        or not shapes_known
        or names[0] != "build"
        or names[-1]
        or names[1:-1] not in ([], ["node"])
    ):
        raise DevClusterError(
            "an image Dockerfile has a stage 'FROM <python base> AS build', optionally "
            "'FROM <node base> AS node', and the runtime stage last (no AS)"
        )
    bases = {
        name or "runtime": f.arguments.split()[0] for name, f in zip(names, froms, strict=True)
    }
    if bases["build"] != bases["runtime"]:
        raise _refuse(
            froms[0], f"the build stage's base differs from the runtime's ({bases['runtime']})"
        )
    return bases


def _context_copies(instruction: Instruction, scratch: str | None) -> list[Copy]:
    """The sources of a COPY from the build context, each with its target. With `scratch`,
    the destination must be a directory under it."""
    *sources, destination = instruction.arguments.split()
    if not destination.endswith("/") or not destination.startswith(scratch or "/"):
        where = f"a directory under {scratch}" if scratch else "an absolute directory"
        raise _refuse(instruction, f"copy into {where} (ending in /)")
    copies = []
    for source in sources:
        if not _CONTEXT_PATH.fullmatch(source) or {".", ".."} & set(source.split("/")):
            raise _refuse(
                instruction,
                "copy files or directories (ending in /) of the build context only, by a "
                "relative path without '.', '..' or wildcards",
            )
        target = PurePosixPath(destination)
        if not source.endswith("/"):
            target /= PurePosixPath(source).name
        copies.append(Copy(source, str(target)))
    return copies


def _node_step(instruction: Instruction, node: dict[str, object]) -> None:
    """One instruction of the ``node`` stage, recorded in `node`, or refused."""
    keyword, arguments = instruction.keyword, instruction.arguments
    if keyword == "WORKDIR" and arguments.startswith("/") and "directory" not in node:
        node["directory"] = arguments
    elif keyword == "COPY" and arguments == f"{' '.join(_NODE_FILES)} ./" and "directory" in node:
        node["copies"] = tuple(Copy(name, f"{node['directory']}/{name}") for name in _NODE_FILES)
    elif keyword == "RUN" and (match := _NPM_CI.fullmatch(arguments)) and "copies" in node:
        options = tuple(match["options"].split())
        if not set(options) <= _NPM_OPTIONS:
            raise _refuse(instruction, f"npm options other than {sorted(_NPM_OPTIONS)}")
        node["npm_options"] = options
    else:
        raise _refuse(
            instruction,
            "the node stage is WORKDIR <dir>, COPY package.json package-lock.json ./ and "
            "RUN npm ci [options], in that order",
        )


def image_recipe(text: str) -> ImageRecipe:  # noqa: PLR0915 - one pass, one branch per keyword
    """The recipe of the Dockerfile ``text``, or an error naming the line it cannot follow."""
    instructions = parse(text)
    bases = _stages(instructions)
    base = bases["runtime"]
    suite = _PYTHON_BASE.fullmatch(base.split("@")[0])
    froms = [i for i in instructions if i.keyword == "FROM"]
    if suite is None:
        raise _refuse(froms[-1], "the base is not python:<version>[-slim]-<debian suite>")
    if "node" in bases:
        node_base = _NODE_BASE.fullmatch(bases["node"].split("@")[0])
        if node_base is None or node_base["suite"] != suite["suite"]:
            raise _refuse(
                froms[1], f"the node stage's base is not node:<version>-{suite['suite']}-slim"
            )

    copies: list[Copy] = []
    runtime_copies: list[Copy] = []
    node: dict[str, object] = {}
    venv = requirements = script = create_user = package = constraints = None
    pip_options: tuple[str, ...] = ()
    package_options: tuple[str, ...] = ()
    apt_packages: tuple[str, ...] = ()
    env = dict(LOCAL_BASE_ENV)
    config: dict[str, object] = {}
    stage = ""
    for instruction in instructions:
        keyword, arguments = instruction.keyword, instruction.arguments
        if keyword == "FROM":
            words = arguments.split()
            stage = words[2] if len(words) == 3 else "runtime"
        elif stage == "node":
            _node_step(instruction, node)
        elif keyword == "ENV" and stage == "build":
            pass  # build-time pip settings; they change how pip runs, not what it installs
        elif keyword == "ENV":
            for key, value in _env_pairs(instruction):
                env[key] = _expand(value, env)
        elif keyword == "COPY" and arguments == f"--from=build {venv} {venv}" and venv:
            pass  # one root file system here: the venv is already in place
        elif (
            keyword == "COPY"
            and stage == "runtime"
            and "directory" in node
            and arguments == f"--from=node {node['directory']} {node['directory']}"
        ):
            node["taken"] = True
        elif keyword == "COPY" and not arguments.startswith("--") and stage == "build":
            copies += _context_copies(instruction, BUILD_SCRATCH)
        elif keyword == "COPY" and not arguments.startswith("--") and stage == "runtime":
            runtime_copies += _context_copies(instruction, None)
        elif keyword == "RUN" and (match := _VENV.fullmatch(arguments)):
            venv = match["venv"]
        elif keyword == "RUN" and (match := _PIP.fullmatch(arguments)):
            options = tuple(match["options"].split())
            if match["venv"] != venv or not set(options) <= _PIP_OPTIONS:
                raise _refuse(instruction, f"pip options other than {sorted(_PIP_OPTIONS)}")
            copied = {c.target for c in copies if not c.is_directory}
            if match["file"] not in copied:
                raise _refuse(instruction, "the requirements file is not COPYed in before")
            if match["constraints"] and match["constraints"] not in copied:
                raise _refuse(instruction, "the constraints file is not COPYed in before")
            requirements, constraints, pip_options = match["file"], match["constraints"], options
        elif keyword == "RUN" and (match := _PACKAGE.fullmatch(arguments)):
            options = tuple(match["options"].split())
            if match["venv"] != venv or "--no-deps" not in options:
                raise _refuse(instruction, "install the project into the venv with --no-deps")
            if not set(options) <= _PACKAGE_OPTIONS:
                raise _refuse(instruction, f"pip options other than {sorted(_PACKAGE_OPTIONS)}")
            if not any(c.target.startswith(f"{match['project']}/") for c in copies):
                raise _refuse(instruction, "the project is not COPYed in before")
            package, package_options = match["project"], options
        elif keyword == "RUN" and (match := _SCRIPT.fullmatch(arguments)):
            copied = {c.target for c in copies if not c.is_directory}
            if match["script"] not in copied or match["venv"] != venv:
                raise _refuse(instruction, "the script is not COPYed in, or not run on the venv")
            script = match["script"]
        elif keyword == "RUN" and _APT.fullmatch(arguments) and stage == "runtime":
            apt_packages = tuple(
                line.removesuffix("\\").strip()
                for _, line in apt_package_lines(instruction.raw_lines)
            )
        elif keyword == "RUN" and _USERADD.fullmatch(arguments) and stage == "runtime":
            create_user = arguments
        elif not _config_step(instruction, config):
            raise _refuse(instruction, "not a step the local build knows")

    missing = [
        name
        for name, value in [
            ("RUN python -m venv", venv),
            ("RUN <venv>/bin/pip install --requirement", requirements),
            ("RUN <venv>/bin/pip install --no-deps <project>", package),
            ("RUN useradd", create_user),
            ("apt-get install in the runtime stage", apt_packages),
            ("RUN npm ci in the node stage", "npm_options" in node or "node" not in bases),
            (
                "COPY --from=node <dir> <dir> in the runtime stage",
                node.get("taken", "node" not in bases),
            ),
        ]
        if not value
    ]
    if missing:
        raise DevClusterError(f"the Dockerfile lacks: {', '.join(missing)}")
    assert venv and requirements and create_user and package  # for the type checker
    config["Env"] = [f"{key}={value}" for key, value in env.items()]
    return ImageRecipe(
        base=base,
        debian_suite=suite["suite"],
        apt_packages=apt_packages,
        venv=venv,
        copies=tuple(copies),
        requirements=requirements,
        constraints=constraints,
        pip_options=pip_options,
        configure_script=script,
        package=package,
        package_options=package_options,
        node=(
            NodeStage(
                base=bases["node"],
                directory=str(node["directory"]),
                copies=node["copies"],  # type: ignore[arg-type]
                npm_options=node["npm_options"],  # type: ignore[arg-type]
            )
            if "node" in bases
            else None
        ),
        runtime_copies=tuple(runtime_copies),
        create_user=create_user,
        runtime_config=config,
    )


# --- a Go build stage and an empty runtime (images/dns) -------------------------------------------

# golang:<x.y.z>[-<variant>]: the official Go image at that Go release (variant: its Debian or
# Alpine base, which a static binary never sees).
_GO_BASE = re.compile(r"golang:(?P<version>\d+\.\d+\.\d+)(?:-[a-z0-9.]+)?")
# What a `go build` line may set: flags that change only how the module in the build stage is
# compiled, never which files it reads (no -overlay, -modfile, -pgo=<file>, -toolexec) and never
# a rewrite of go.mod or go.sum (-mod=readonly only).
_GO_FLAG = re.compile(
    r"-trimpath|-buildvcs=(?:true|false)|-mod=readonly|-ldflags=[^'\"]*|-tags=[A-Za-z0-9_,.]+"
)
_GO_ENV = ("CGO_ENABLED", "GOFLAGS")
# An empty image's environment as BuildKit writes it into the config of a `FROM scratch` image.
SCRATCH_ENV = {"PATH": LOCAL_BASE_ENV["PATH"]}


@dataclass(frozen=True)
class GoBuild:
    """``RUN [CGO_ENABLED=0] [GOFLAGS="..."] go build <flags> -o <output> .``, run in the
    module directory the build stage COPYs in and makes its WORKDIR."""

    directory: str  # the module in the build stage, e.g. /src
    env: tuple[tuple[str, str], ...]  # as written, e.g. (("CGO_ENABLED", "0"), ("GOFLAGS", ...))
    flags: tuple[str, ...]  # between `go build` and `-o`, e.g. ("-trimpath", "-ldflags=-s -w")
    output: str  # the binary in the build stage, e.g. /out/coredns


@dataclass(frozen=True)
class GoImageRecipe:
    """A Dockerfile of the shape ``FROM golang:<version>[-<variant>] AS build`` (COPY of a Go
    module from the build context, WORKDIR there, one ``go build``) and ``FROM scratch``
    (``COPY --from=build`` of the binary, then only runtime config)."""

    base: str  # e.g. golang:1.26.8-trixie
    go_version: str  # the Go release of that base, e.g. 1.26.8
    copies: tuple[Copy, ...]  # the module, COPYed into the build stage
    go_build: GoBuild
    binaries: tuple[tuple[str, str], ...]  # (path in the build stage, path in the image)
    runtime_config: dict[str, object] = field(hash=False)  # OCI image config "config" section

    @property
    def all_copies(self) -> tuple[Copy, ...]:
        """Every build-context path any stage COPYs."""
        return self.copies


def _go_build(instruction: Instruction, directory: str) -> GoBuild:
    """The ``go build`` of a RUN line, or refused naming what the local build cannot follow."""
    try:
        words = shlex.split(instruction.arguments)
    except ValueError as exc:
        raise _refuse(instruction, f"unbalanced quoting ({exc})") from None
    env: list[tuple[str, str]] = []
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env.append((key, value))
    if words[:2] != ["go", "build"] or len(words) < 5 or words[-3] != "-o" or words[-1] != ".":
        raise _refuse(
            instruction,
            "write the one build step as RUN [ENV=value ...] go build "
            "[flags] -o /<path> . (the module the stage COPYs in, as its WORKDIR)",
        )
    flags, output = tuple(words[2:-3]), words[-2]
    unknown_env = [key for key, _ in env if key not in _GO_ENV]
    goflags = dict(env).get("GOFLAGS", "").split()
    odd_flags = [flag for flag in (*flags, *goflags) if not _GO_FLAG.fullmatch(flag)]
    if unknown_env or len({key for key, _ in env}) != len(env):
        raise _refuse(instruction, f"set only {', '.join(_GO_ENV)} (once each) on go build")
    if odd_flags:
        raise _refuse(
            instruction,
            f"go build flags {odd_flags} (known: -trimpath, -buildvcs=, -mod=readonly, "
            "-ldflags=, -tags=)",
        )
    if dict(env).get("CGO_ENABLED") != "0":
        raise _refuse(instruction, "set CGO_ENABLED=0: the scratch runtime has no C library")
    if not output.startswith("/") or {".", ".."} & set(output.split("/")):
        raise _refuse(instruction, "write -o as an absolute path without '.' or '..'")
    return GoBuild(directory=directory, env=tuple(env), flags=flags, output=output)


def go_image_recipe(text: str) -> GoImageRecipe:
    """The recipe of a Go-build-and-scratch Dockerfile ``text``, or an error naming the line
    it cannot follow."""
    instructions = parse(text)
    froms = [i for i in instructions if i.keyword == "FROM"]
    words = [f.arguments.split() for f in froms]
    if (
        len(froms) != 2
        or words[1] != ["scratch"]
        or words[0][1:] not in (["AS", "build"], ["as", "build"])
    ):
        raise DevClusterError(
            "a Go image's Dockerfile has two stages: 'FROM golang:<version>[-<variant>] AS "
            "build' and the runtime 'FROM scratch'"
        )
    base = words[0][0]
    go = _GO_BASE.fullmatch(base.split("@")[0])
    if go is None:
        raise _refuse(froms[0], "the base is not golang:<version>[-<variant>]")

    copies: list[Copy] = []
    directory: str | None = None
    build: GoBuild | None = None
    binaries: list[tuple[str, str]] = []
    env = dict(SCRATCH_ENV)
    config: dict[str, object] = {}
    stage = ""
    for instruction in instructions:
        keyword, arguments = instruction.keyword, instruction.arguments
        if keyword == "FROM":
            stage = "build" if stage == "" else "runtime"
        elif stage == "build" and keyword == "COPY" and not copies and directory is None:
            copies = _context_copies(instruction, None)
            if len(copies) != 1 or not copies[0].is_directory:
                raise _refuse(instruction, "COPY the one module directory (ending in /)")
        elif stage == "build" and keyword == "WORKDIR" and copies and directory is None:
            if arguments != copies[0].target:
                raise _refuse(instruction, f"work in the module's directory, {copies[0].target}")
            directory = arguments
        elif stage == "build" and keyword == "RUN" and directory and build is None:
            build = _go_build(instruction, directory)
        elif stage == "runtime" and keyword == "COPY" and arguments.startswith("--from=build "):
            paths = arguments.split()[1:]
            if build is None or len(paths) != 2 or paths[0] != build.output:
                raise _refuse(instruction, "copy the go build's output (-o), one file")
            source, target = paths
            if not target.startswith("/") or target.endswith("/"):
                raise _refuse(instruction, "copy the binary to an absolute file path")
            binaries.append((source, target))
        elif stage == "runtime" and keyword == "ENV":
            for key, value in _env_pairs(instruction):
                env[key] = _expand(value, env)
        elif stage == "runtime" and keyword == "WORKDIR":
            # Docker would create the directory in the empty image; the local layer holds only
            # the binaries, so the container would start in a directory that does not exist.
            raise _refuse(instruction, "no WORKDIR in a scratch runtime (nothing creates it)")
        elif stage != "runtime" or not _config_step(instruction, config):
            raise _refuse(
                instruction,
                "the build stage is COPY <module>/ <dir>/, WORKDIR <dir>, RUN ... go build "
                "..., in that order; the scratch stage only COPY --from=build and runtime config",
            )
    if build is None or not binaries:
        raise DevClusterError(
            "the Dockerfile lacks: "
            + ", ".join(
                what
                for what, present in [("RUN ... go build", build), ("COPY --from=build", binaries)]
                if not present
            )
        )
    config["Env"] = [f"{key}={value}" for key, value in env.items()]
    return GoImageRecipe(
        base=base,
        go_version=go["version"],
        copies=tuple(copies),
        go_build=build,
        binaries=tuple(binaries),
        runtime_config=config,
    )


def recipe_of(text: str) -> ImageRecipe | GoImageRecipe:
    """The recipe of any image Dockerfile: a Go build on a golang base, else the Python shape."""
    first = next((i for i in parse(text) if i.keyword == "FROM"), None)
    if first is not None and first.arguments.startswith("golang:"):
        return go_image_recipe(text)
    return image_recipe(text)
