"""Container images for the dev node, built on this machine: no Docker, no registry.

The node's containerd takes images with ``ctr images import`` from an OCI image-layout tar
(https://github.com/opencontainers/image-spec/blob/main/image-layout.md). This module writes
those tars with the standard library only, and builds the images the node needs:

- the pause (sandbox) image, our own ``images/pause/pause.c`` compiled static, tagged
  ``registry.k8s.io/pause:3.10.2``: containerd 2.3.7's default sandbox image, so containerd
  finds it by that name and pins it;
- the images of ``images/<name>/Dockerfile`` (``LOCAL_IMAGES``: notebook, platform, hub, dns),
  each built as its Dockerfile says (see ``build_image``): the Python images from Debian, PyPI
  and npm packages in a chroot, the Go image (dns) by this machine's Go.

Guarantees of ``write_oci_archive``:

- every blob is stored under ``blobs/sha256/<hex>`` with the digest of its bytes;
- the config's ``rootfs.diff_ids`` are the digests of the *uncompressed* layer tars, in order,
  and each manifest layer's media type says whether that blob is gzip;
- ``index.json`` names the image twice: ``io.containerd.image.name`` (the full reference, so
  ``ctr images import`` needs no ``--base-name``) and ``org.opencontainers.image.ref.name``
  (the tag, as the image-layout spec has it);
- the same inputs give the same bytes (entries sorted, mtime 0, owner root), and the archive
  appears at its path only when complete (written beside it, then renamed).

Archives are cached under ``<cache>/images/`` by a hash of their inputs, so a second build is a
file lookup.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from provisioner import __version__
from provisioner.devcluster.binaries import COREDNS_VERSION, go_build
from provisioner.devcluster.dockerfile import (
    BUILD_SCRATCH,
    LOCAL_BASE_ENV,
    Copy,
    GoImageRecipe,
    ImageRecipe,
    NodeStage,
    recipe_of,
)
from provisioner.errors import DevClusterError

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_SOURCE_DIR = REPO_ROOT / "images"

# containerd 2.3.7's default `pinned_images.sandbox`: the node looks the sandbox image up by
# this name, so ours must carry it exactly.
PAUSE_REF = "registry.k8s.io/pause:3.10.2"
PAUSE_SOURCE = IMAGES_SOURCE_DIR / "pause" / "pause.c"

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

# Bumped when the archive layout written here changes, so cached archives are rebuilt.
WRITER_VERSION = "1"

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"

# A fully qualified reference: a registry host (has a dot or a port, or is localhost), a path,
# and a tag. containerd stores names fully qualified; an import under a short name would
# never match what the kubelet asks for (it normalises `ucloud-tre/notebook:1` to docker.io/...).
_REFERENCE = re.compile(
    r"(?P<name>(?:[a-z0-9.-]+\.[a-z0-9.-]+|[a-z0-9.-]+:[0-9]+|localhost)"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+)"
    r":(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"
)

_GO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def host_architecture() -> str:
    """The OCI (Go) name of this machine's architecture: ``amd64``, ``arm64``."""
    machine = platform.machine().lower()
    try:
        return _GO_ARCH[machine]
    except KeyError:
        raise DevClusterError(
            f"no OCI architecture name known for this machine ({machine!r}); "
            f"supported: {sorted(set(_GO_ARCH))}"
        ) from None


def split_reference(ref: str) -> tuple[str, str]:
    """(name, tag) of a fully qualified image reference, or an error naming the fix."""
    match = _REFERENCE.fullmatch(ref)
    if match is None:
        raise DevClusterError(
            f"image reference {ref!r} is not fully qualified: write registry/path:tag, e.g. "
            f"docker.io/{ref} (containerd stores and the kubelet looks up full names)"
        )
    return match["name"], match["tag"]


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str  # sha256:<hex> of the bytes as stored
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class _Layer:
    path: Path
    descriptor: Descriptor
    diff_id: str  # sha256:<hex> of the uncompressed tar


def _sha256_of_stream(stream: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return f"sha256:{digest.hexdigest()}", size


def _layer_identity(open_layer: Callable[[], IO[bytes]], name: str) -> tuple[Descriptor, str]:
    """Descriptor (digest and size of the bytes as stored, media type told by the gzip magic)
    and diff_id (digest of the uncompressed tar) of a layer, read as a stream twice at most:
    a layer can be a gigabyte. ``open_layer`` opens it from the start each time."""
    with open_layer() as stream:
        compressed = stream.read(2) == _GZIP_MAGIC
    with open_layer() as stream:
        digest, size = _sha256_of_stream(stream)
    diff_id = digest
    if compressed:
        try:
            with open_layer() as stream, gzip.GzipFile(fileobj=stream, mode="rb") as plain:
                diff_id, _ = _sha256_of_stream(plain)  # type: ignore[arg-type]
        except (OSError, EOFError) as exc:
            raise DevClusterError(
                f"layer {name} starts like gzip but does not unpack: {exc}"
            ) from exc
    media_type = MEDIA_TYPE_LAYER_GZIP if compressed else MEDIA_TYPE_LAYER
    return Descriptor(media_type, digest, size), diff_id


def _describe_layer(path: Path) -> _Layer:
    descriptor, diff_id = _layer_identity(lambda: path.open("rb"), str(path))
    _check_is_tar(path)
    return _Layer(path, descriptor, diff_id)


def _check_is_tar(path: Path) -> None:
    # Fail here, with the layer's name, rather than at `ctr images import` on the node.
    try:
        with tarfile.open(path, "r:*") as archive:
            archive.next()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DevClusterError(f"layer {path} is not a tar archive: {exc}") from exc


def _json_bytes(document: dict[str, Any]) -> bytes:
    # Sorted and compact: the digest of a config or manifest depends only on its content.
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _blob_descriptor(media_type: str, data: bytes) -> Descriptor:
    return Descriptor(media_type, f"sha256:{hashlib.sha256(data).hexdigest()}", len(data))


def image_config(runtime_config: dict[str, Any], diff_ids: list[str]) -> dict[str, Any]:
    """The OCI image config: this machine's platform, the runtime config, the layer diff_ids.

    No ``created`` time, so identical inputs give an identical image digest."""
    return {
        "architecture": host_architecture(),
        "os": "linux",
        "config": runtime_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }


def _tar_info(name: str, size: int, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_oci_archive(
    out: Path, ref: str, config: dict[str, Any], layers: list[Path]
) -> Descriptor:
    """Write an OCI image-layout tar of one image to ``out``, for ``ctr images import``.

    ``ref``: the full reference (``docker.io/ucloud-tre/notebook:0.1.0``). ``config``: the
    runtime part of the image config (``User``, ``Env``, ``Entrypoint``, ``Cmd``,
    ``WorkingDir``, ``ExposedPorts``, ...). ``layers``: layer tars, bottom first, each plain or
    gzip. Returns the manifest's descriptor (its digest is the image digest containerd shows).
    """
    name, tag = split_reference(ref)
    del name  # validated; the full ref is what containerd stores
    if not layers:
        raise DevClusterError(f"image {ref}: at least one layer is needed")
    described = [_describe_layer(path) for path in layers]

    config_bytes = _json_bytes(image_config(config, [layer.diff_id for layer in described]))
    config_descriptor = _blob_descriptor(MEDIA_TYPE_CONFIG, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": config_descriptor.as_json(),
        "layers": [layer.descriptor.as_json() for layer in described],
    }
    manifest_bytes = _json_bytes(manifest)
    manifest_descriptor = _blob_descriptor(MEDIA_TYPE_MANIFEST, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [
            {
                **manifest_descriptor.as_json(),
                "platform": {"architecture": host_architecture(), "os": "linux"},
                "annotations": {ANNOTATION_CONTAINERD_NAME: ref, ANNOTATION_REF_NAME: tag},
            }
        ],
    }

    with _replaced_atomically(out) as partial, tarfile.open(partial, "w") as archive:
        _add_bytes(archive, "oci-layout", _json_bytes({"imageLayoutVersion": "1.0.0"}))
        _add_bytes(archive, "index.json", _json_bytes(index))
        blobs: dict[str, tuple[int, Path | bytes]] = {}
        for layer in described:
            blobs[layer.descriptor.digest] = (layer.descriptor.size, layer.path)
        blobs[config_descriptor.digest] = (config_descriptor.size, config_bytes)
        blobs[manifest_descriptor.digest] = (manifest_descriptor.size, manifest_bytes)
        _add_dir(archive, "blobs")
        _add_dir(archive, "blobs/sha256")
        for digest in sorted(blobs):  # a layer used twice is stored once
            size, content = blobs[digest]
            member = f"blobs/sha256/{digest.removeprefix('sha256:')}"
            if isinstance(content, bytes):
                _add_bytes(archive, member, content)
            else:
                with content.open("rb") as stream:
                    archive.addfile(_tar_info(member, size), stream)
    return manifest_descriptor


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    archive.addfile(_tar_info(name, len(data)), io.BytesIO(data))


def _add_dir(archive: tarfile.TarFile, name: str) -> None:
    info = _tar_info(name, 0, 0o755)
    info.type = tarfile.DIRTYPE
    archive.addfile(info)


@contextmanager
def _replaced_atomically(out: Path) -> Iterator[Path]:
    """A temporary path beside ``out`` that becomes ``out`` only if the block succeeds, so a
    cache hit is never a half-written file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    partial = Path(name)
    try:
        yield partial
        partial.chmod(0o644)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


# --- reading an archive back (what tests and callers check) ------------------------------------


@dataclass(frozen=True)
class ArchiveSummary:
    ref: str
    tag: str
    manifest_digest: str
    config: dict[str, Any]
    layer_digests: list[str]


def read_oci_archive(path: Path) -> ArchiveSummary:
    """Check an OCI image-layout tar written here and say what it holds.

    Fails with the first inconsistency: a blob whose bytes do not match its name or its
    descriptor's size, a diff_id that is not the digest of the uncompressed layer, a missing
    annotation or a media type that disagrees with the layer's compression."""
    with tarfile.open(path, "r:") as archive:
        members = {m.name: m for m in archive.getmembers()}

        def open_blob(digest: str) -> IO[bytes]:
            member = members.get(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            stream = archive.extractfile(member) if member is not None else None
            if stream is None:
                raise DevClusterError(f"{path}: blob {digest} is missing")
            return stream

        def document(descriptor: dict[str, Any]) -> dict[str, Any]:
            with open_blob(descriptor["digest"]) as stream:
                data = stream.read()
            actual = _blob_descriptor(descriptor["mediaType"], data)
            if (actual.digest, actual.size) != (descriptor["digest"], descriptor["size"]):
                raise DevClusterError(
                    f"{path}: blob {descriptor['digest']} holds bytes of digest {actual.digest}"
                    f" and size {actual.size}"
                )
            loaded: dict[str, Any] = json.loads(data)
            return loaded

        def named(name: str) -> dict[str, Any]:
            stream = archive.extractfile(members[name]) if name in members else None
            if stream is None:
                raise DevClusterError(f"{path}: {name} is missing")
            loaded: dict[str, Any] = json.load(stream)
            return loaded

        if named("oci-layout").get("imageLayoutVersion") != "1.0.0":
            raise DevClusterError(f"{path}: oci-layout is not imageLayoutVersion 1.0.0")
        (entry,) = named("index.json")["manifests"]
        annotations = entry.get("annotations", {})
        ref = annotations.get(ANNOTATION_CONTAINERD_NAME, "")
        _, tag = split_reference(ref)
        if annotations.get(ANNOTATION_REF_NAME) != tag:
            raise DevClusterError(f"{path}: {ANNOTATION_REF_NAME} is not the tag {tag!r}")
        manifest = document(entry)
        config = document(manifest["config"])
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(manifest["layers"]):
            raise DevClusterError(
                f"{path}: {len(diff_ids)} diff_ids for {len(manifest['layers'])} layers"
            )
        for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            digest = layer["digest"]
            actual, actual_diff_id = _layer_identity(functools.partial(open_blob, digest), digest)
            if (actual.digest, actual.size) != (digest, layer["size"]):
                raise DevClusterError(
                    f"{path}: blob {digest} holds bytes of digest {actual.digest}"
                    f" and size {actual.size}"
                )
            if actual.media_type != layer["mediaType"]:
                raise DevClusterError(f"{path}: layer {digest} is not {layer['mediaType']}")
            if actual_diff_id != diff_id:
                raise DevClusterError(f"{path}: diff_id {diff_id} does not match its layer")
        return ArchiveSummary(
            ref=ref,
            tag=tag,
            manifest_digest=entry["digest"],
            config=config,
            layer_digests=[layer["digest"] for layer in manifest["layers"]],
        )


# --- the pause image ---------------------------------------------------------------------------


def _inputs_hash(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())  # length-safe: hash of hashes
    return digest.hexdigest()[:16]


def _compiler_identity() -> bytes:
    if shutil.which("gcc") is None:
        raise DevClusterError(
            "building the pause image needs gcc and static glibc: apt-get install gcc libc6-dev"
        )
    return subprocess.run(["gcc", "--version"], capture_output=True, check=True).stdout


def build_pause_image(cache_dir: Path) -> Path:
    """The pause image archive, built once per (pause.c, gcc) and cached under
    ``<cache_dir>/images/``. ``cache_dir`` is the platform's cache root
    (``provisioner.devcluster.binaries.cache_dir()``)."""
    source = PAUSE_SOURCE.read_bytes()
    key = _inputs_hash(source, _compiler_identity(), WRITER_VERSION.encode(), PAUSE_REF.encode())
    out = cache_dir / "images" / f"pause-3.10.2-{key}.oci.tar"
    if out.is_file():
        return out
    with tempfile.TemporaryDirectory(prefix="tre-pause-") as work:
        binary = Path(work) / "pause"
        compiled = subprocess.run(
            [
                "gcc",
                "-Os",
                "-static",
                "-s",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-o",
                binary,
                PAUSE_SOURCE,
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if compiled.returncode != 0:
            raise DevClusterError(
                f"compiling {PAUSE_SOURCE} failed (static linking needs libc6-dev):\n"
                + compiled.stderr
            )
        layer = Path(work) / "layer.tar"
        with tarfile.open(layer, "w") as archive, binary.open("rb") as stream:
            archive.addfile(_tar_info("pause", binary.stat().st_size, 0o755), stream)
        write_oci_archive(
            out,
            PAUSE_REF,
            # The upstream pause image's user: nobody's ids, never root.
            {"User": "65535:65535", "Entrypoint": ["/pause"]},
            [layer],
        )
    return out


# --- the images of images/<name>/Dockerfile ----------------------------------------------------

# Every Dockerfile's build context: the repository root, because each image carries this
# checkout's `tre` (the Dockerfiles COPY pyproject.toml, README.md and provisioner/).
CONTEXT_DIR = REPO_ROOT
# Left out of every COPY, as images/<name>/Dockerfile.dockerignore leaves them out of Docker's
# build context (a unit test holds them equal): bytecode of whatever Python ran here.
COPY_IGNORED = ("__pycache__", "*.pyc")


@dataclass(frozen=True)
class LocalImage:
    """One image built from ``images/<name>/Dockerfile`` and tagged `ref`."""

    name: str  # its directory under images/
    ref: str  # the fully qualified reference the node stores it under

    @property
    def source_dir(self) -> Path:
        return IMAGES_SOURCE_DIR / self.name

    @property
    def dockerfile(self) -> Path:
        return self.source_dir / "Dockerfile"


# The notebook of every workspace; the hub asks for hub_config.config.NOTEBOOK_IMAGE.
NOTEBOOK = LocalImage("notebook", f"docker.io/ucloud-tre/notebook:{__version__}")
# The controller and the airlock (`tre controller run`, `tre airlock serve`): the chart's
# images.tre default (provisioner/chart/values.py).
PLATFORM = LocalImage("platform", f"docker.io/ucloud-tre/tre:{__version__}")
# JupyterHub with hub_config/ and configurable-http-proxy: the chart's images.hub default.
HUB = LocalImage("hub", f"docker.io/ucloud-tre/hub:{__version__}")
# The workspaces' resolver, CoreDNS from provisioner/devcluster/coredns/: the chart's images.dns
# default, tagged with the CoreDNS release it is (not this package's version).
DNS = LocalImage("dns", f"docker.io/ucloud-tre/dns:{COREDNS_VERSION.removeprefix('v')}")
# The browser gate beside every notebook; the hub asks for notebook_pods.GATE_IMAGE.
GATE = LocalImage("gate", f"docker.io/ucloud-tre/gate:{__version__}")
LOCAL_IMAGES = (NOTEBOOK, PLATFORM, HUB, DNS, GATE)
NOTEBOOK_REF = NOTEBOOK.ref

# What the Dockerfile's python base image brings and a Debian minbase does not, one a line:
LOCAL_BASE_PACKAGES = (
    "python3",  # the interpreter: Debian's, where the Dockerfile has the python image's own
    "python3-venv",  # `python3 -m venv` (ensurepip), which the Dockerfile's first RUN uses
)
# The official slim bases drop manuals and documentation the same way; copyright files stay
# (licence terms travel with the binaries).
_DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
)
# Where wheels wait inside the image during the build (in the build stage's scratch, emptied
# before packing, as the Dockerfile's runtime stage never sees the build stage's /tmp).
_WHEELS = f"{BUILD_SCRATCH}wheels"
# Bumped when the steps below change in a way the hashed input files do not show.
BUILD_VERSION = "2"

# The target interpreter's wheel tags, asked of the target itself so that the wheels pip
# downloads on the host are the ones its pip will accept. pip's vendored `packaging` is the
# code pip uses to decide the same thing.
_TAGS_PROGRAM = """
import json, sys
from pip._vendor.packaging.tags import sys_tags
tags = list(sys_tags())
print(json.dumps({
    "python_version": "%d.%d" % sys.version_info[:2],
    "implementation": tags[0].interpreter[:2],
    "abis": list(dict.fromkeys(t.abi for t in tags)),
    "platforms": list(dict.fromkeys(t.platform for t in tags)),
}))
"""


@dataclass(frozen=True)
class DebianSources:
    """Where this machine's apt gets Debian from; the local build uses the same places."""

    archive: str  # URI of the main archive (suites <codename>, <codename>-updates)
    security: str | None  # URI of the security archive (<codename>-security), if configured


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def debian_sources(files: dict[str, str], codename: str) -> DebianSources:
    """The Debian archive and security URIs among apt source files (name -> text): deb822
    ``*.sources`` and one-line ``*.list``, the entries whose suite is ``codename`` (main
    archive) or ``<codename>-security``. Pure, so tests give it files."""
    entries: list[tuple[str, str, str]] = []  # (type, uri, suite)
    for name, text in files.items():
        if name.endswith(".sources"):
            for stanza in _deb822_stanzas(text):
                if stanza.get("enabled", "yes").lower() == "no":
                    continue
                for kind in stanza.get("types", "").split():
                    for uri in stanza.get("uris", "").split():
                        entries += [(kind, uri, s) for s in stanza.get("suites", "").split()]
        elif name.endswith(".list"):
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
                if len(words) >= 3:
                    entries.append((words[0], words[1], words[2]))
    uris = {suite: uri.rstrip("/") for kind, uri, suite in entries if kind == "deb"}
    if codename not in uris:
        raise DevClusterError(
            f"no Debian archive for {codename!r} in this machine's apt sources "
            f"({', '.join(sorted(files)) or 'none found'}); the images are built from the "
            "same archive apt uses here: configure one (a 'deb' entry for the Debian archive) "
            "and run again"
        )
    return DebianSources(archive=uris[codename], security=uris.get(f"{codename}-security"))


def host_debian_sources(apt_dir: Path = Path("/etc/apt")) -> DebianSources:
    files = {
        str(path): path.read_text()
        for path in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
        if path.is_file() and path.suffix in {".list", ".sources"}
    }
    os_release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    codename = re.search(r"^VERSION_CODENAME=(\S+)$", os_release, re.MULTILINE)
    if codename is None:
        raise DevClusterError(
            "building the images needs a Debian host (its apt sources and keyring): "
            "/etc/os-release names no VERSION_CODENAME"
        )
    return debian_sources(files, codename[1])


def apt_source_lines(sources: DebianSources, suite: str) -> list[str]:
    """One-line apt sources for ``suite`` from the same archives."""
    lines = [f"deb {sources.archive} {suite} main", f"deb {sources.archive} {suite}-updates main"]
    if sources.security is not None:
        lines.append(f"deb {sources.security} {suite}-security main")
    return lines


def _run(command: list[str | Path], what: str, **kwargs: Any) -> str:
    """Run a build step; on failure, an error naming the step with the tail of its output."""
    result = subprocess.run(command, check=False, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise DevClusterError(f"{what} failed (exit {result.returncode}):\n{tail}")
    stdout: str = result.stdout
    return stdout


def run_in_rootfs(
    rootfs: Path,
    command: list[str],
    what: str,
    user: str | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``command`` inside ``rootfs`` as ``user`` (``uid:gid``, default root) with ``env``
    (default: the base PATH and LANG) and return its output: its own mount namespace with
    /proc and /dev (gone when the command ends, so nothing stays mounted under a directory we later
    delete) and no network (every build step inside the image is offline by construction)."""
    userspec = [f"--userspec={user}"] if user else []
    # /dev as a container runtime makes it: a tmpfs with the six devices OCI runtimes provide.
    script = (
        'mount -t proc proc "$0/proc" && mount -t tmpfs -o mode=755 dev "$0/dev" && '
        "for d in null zero full random urandom tty; do "
        'touch "$0/dev/$d" && mount --bind "/dev/$d" "$0/dev/$d" || exit 1; done && '
        'exec chroot "$@"'
    )
    unshare: list[str | Path] = [
        "unshare",
        "--mount",
        "--net",
        "--fork",
        "sh",
        "-c",
        script,
        rootfs,
    ]
    return _run([*unshare, *userspec, rootfs, *command], what, env=env or dict(LOCAL_BASE_ENV))


def _require_build_tools(image: LocalImage, recipe: ImageRecipe) -> None:
    if os.geteuid() != 0:
        raise DevClusterError(
            f"building the {image.name} image needs root (a chroot, device nodes, files owned by "
            "root in the image); run it as root, as the dev node runs"
        )
    tools = ["mmdebstrap", "unshare", "chroot", "tar", *(["npm"] if recipe.node else [])]
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        raise DevClusterError(
            f"building the {image.name} image needs {', '.join(missing)}: apt-get install "
            "mmdebstrap (and npm for a Dockerfile with a node stage; util-linux, coreutils and "
            "tar are part of every Debian)"
        )


def _download_wheels(rootfs: Path, venv: str, requirements: list[str | Path], into: Path) -> None:
    """Wheels for the target interpreter, fetched by this machine's own pip (its index and
    certificates), so nothing inside the image ever talks to the network."""
    tags = json.loads(
        run_in_rootfs(rootfs, [f"{venv}/bin/python", "-c", _TAGS_PROGRAM], "reading the wheel tags")
    )
    target = [
        "--python-version",
        tags["python_version"],
        "--implementation",
        tags["implementation"],
    ]
    target += [arg for abi in tags["abis"] for arg in ("--abi", abi)]
    target += [arg for platform_ in tags["platforms"] for arg in ("--platform", platform_)]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--only-binary=:all:",
            *target,
            "--dest",
            into,
            *requirements,
        ],
        f"downloading the wheels of {' '.join(map(str, requirements))}",
    )


def _copied_files(copy: Copy) -> list[tuple[str, Path]]:
    """(path relative to the copy's target, file in the build context) of one COPY source, in
    a stable order; a directory's files without COPY_IGNORED, as both builds copy them."""
    source = CONTEXT_DIR / copy.source
    if not copy.is_directory:
        return [("", source)]
    if not source.is_dir():
        raise DevClusterError(
            f"a Dockerfile copies {copy.source}, which is not a directory of "
            f"{CONTEXT_DIR}; fix the COPY line"
        )
    ignored = shutil.ignore_patterns(*COPY_IGNORED)
    found = []
    for directory, subdirectories, names in os.walk(source):
        skip = ignored(directory, [*subdirectories, *names])
        subdirectories[:] = sorted(d for d in subdirectories if d not in skip)
        here = Path(directory)
        found += [
            (str((here / name).relative_to(source)), here / name)
            for name in sorted(names)
            if name not in skip
        ]
    return found


def _copy_into(rootfs: Path, copy: Copy) -> None:
    """What the Dockerfile's COPY of `copy` puts into the build stage."""
    for relative, file in _copied_files(copy):
        target = rootfs / copy.target.lstrip("/") / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)


def image_inputs(image: LocalImage, recipe: ImageRecipe | GoImageRecipe) -> list[bytes]:
    """Everything the archive of `image` depends on, for its cache key: for a Go image, the
    Go toolchain that compiles it in place of the Debian packages a Python image starts from
    (the modules it pulls in are go.sum's, one of the copied files)."""
    copied = [
        part
        for copy in recipe.all_copies
        for relative, file in _copied_files(copy)
        for part in (f"{copy.target}/{relative}".encode(), file.read_bytes())
    ]
    return [
        image.dockerfile.read_bytes(),
        *copied,
        image.ref.encode(),
        WRITER_VERSION.encode(),
        BUILD_VERSION.encode(),
        host_architecture().encode(),
        (
            host_go_version().encode()
            if isinstance(recipe, GoImageRecipe)
            else json.dumps([LOCAL_BASE_PACKAGES, _DPKG_EXCLUDES]).encode()
        ),
    ]


def image_archive_path(
    image: LocalImage, cache_dir: Path
) -> tuple[Path, ImageRecipe | GoImageRecipe]:
    """Where the archive of `image` for the current inputs is (or will be) cached."""
    recipe = recipe_of(image.dockerfile.read_text())
    key = _inputs_hash(*image_inputs(image, recipe))
    return cache_dir / "images" / f"{image.name}-{__version__}-{key}.oci.tar", recipe


def build_image(image: LocalImage, cache_dir: Path, progress: Callable[[str], None]) -> Path:
    """The archive of `image`, built from Debian, PyPI (and npm) packages and this checkout's
    `tre` as ``images/<name>/Dockerfile`` says (see ``provisioner.devcluster.dockerfile``),
    and cached under ``<cache_dir>/images/`` by a hash of the Dockerfile, every file it COPYs
    (so a change to `provisioner/` rebuilds it) and the build steps. The Debian, PyPI and npm
    packages themselves are what the archives serve on the day of the first build (as with
    ``docker build``), within the pins of the files the Dockerfile names."""
    out, recipe = image_archive_path(image, cache_dir)
    if out.is_file():
        return out
    if isinstance(recipe, GoImageRecipe):
        progress(
            f"{image.name}: go build of {recipe.copies[0].source} "
            "(seconds with warm Go caches, about 2.5 min cold)"
        )
        _build_go_image(image, recipe, out, cache_dir)
        return out
    _require_build_tools(image, recipe)
    sources = host_debian_sources()
    work = Path(tempfile.mkdtemp(prefix=f".build-{image.name}-", dir=_mkdir(cache_dir / "images")))
    rootfs = work / "rootfs"
    try:
        packages = [*LOCAL_BASE_PACKAGES, *recipe.apt_packages]
        progress(
            f"{image.name}: Debian {recipe.debian_suite} root file system with "
            f"{', '.join(packages)} (about 1.5 min)"
        )
        _run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--mode=root",
                f"--include={','.join(packages)}",
                *(f"--dpkgopt={option}" for option in _DPKG_EXCLUDES),
                recipe.debian_suite,
                rootfs,
                *apt_source_lines(sources, recipe.debian_suite),
            ],
            f"mmdebstrap {recipe.debian_suite}",
        )
        _forget_the_build_host(rootfs)
        _install_venv(image, recipe, rootfs, progress)
        if recipe.node is not None:
            progress(
                f"{image.name}: npm ci of {recipe.node.copies[-1].source} "
                f"into {recipe.node.directory}"
            )
            _npm_ci(recipe.node, rootfs, work / "node")
        run_in_rootfs(rootfs, ["sh", "-c", recipe.create_user], recipe.create_user)
        for copy in recipe.runtime_copies:
            _copy_into(rootfs, copy)
        _empty(rootfs / BUILD_SCRATCH.strip("/"))
        progress(f"{image.name}: packing the image")
        layer = work / "rootfs.tar"
        _run(
            [
                "tar",
                "--create",
                "--file",
                layer,
                "--directory",
                rootfs,
                "--sort=name",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=security.capability",
                # the runtime mounts its own /dev, /proc and /sys
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                ".",
            ],
            "packing the root file system",
        )
        write_oci_archive(out, image.ref, recipe.runtime_config, [layer])
    finally:
        _remove_build_dir(work, rootfs)
    return out


def host_go_version() -> str:
    """`go env GOVERSION` of the Go on PATH (e.g. go1.26.8), the compiler of the Go images."""
    if shutil.which("go") is None:
        raise DevClusterError(
            "building the Go images (dns) needs 'go' on PATH: install the Go release their "
            "Dockerfile's golang base names and run again"
        )
    # GOTOOLCHAIN=local: the Go on PATH itself, never a toolchain a go.mod would select.
    env = {**os.environ, "GOTOOLCHAIN": "local"}
    return _run(["go", "env", "GOVERSION"], "go env GOVERSION", env=env).strip()


def _build_go_image(image: LocalImage, recipe: GoImageRecipe, out: Path, cache_dir: Path) -> None:
    """The Dockerfile's two stages with this machine's Go: the module COPYed into a scratch
    build directory, its one `go build` run there with the Dockerfile's environment and flags
    (the same function builds the node's own CoreDNS), and the binaries it COPYs into the
    empty runtime packed as the image's one layer, owned by root. Refused unless this Go is the
    release of the Dockerfile's base, so the binary is the one a Docker build makes."""
    found = host_go_version()
    if found != f"go{recipe.go_version}":
        raise DevClusterError(
            f"images/{image.name}/Dockerfile builds with {recipe.base} (its FROM "
            f"line), the Go on PATH is {found}: install Go {recipe.go_version}, or move the FROM "
            "line to this Go, so the local image is the binary a Docker build makes"
        )
    work = Path(tempfile.mkdtemp(prefix=f".build-{image.name}-", dir=_mkdir(cache_dir / "images")))
    try:
        stage = work / "build"
        for copy in recipe.copies:
            _copy_into(stage, copy)
        build = recipe.go_build
        go_build(
            _in(stage, build.directory),
            _in(stage, build.output),
            build.env,
            build.flags,
            f"building the {image.name} image",
        )
        layer = work / "layer.tar"
        targets = [PurePosixPath(target.lstrip("/")) for _, target in recipe.binaries]
        directories = sorted({str(d) for t in targets for d in t.parents if str(d) != "."})
        with tarfile.open(layer, "w") as archive:
            for directory in directories:  # sorted: a parent before its children
                _add_dir(archive, directory)
            for (source, _), target in zip(recipe.binaries, targets, strict=True):
                binary = _in(stage, source)
                with binary.open("rb") as stream:
                    archive.addfile(_tar_info(str(target), binary.stat().st_size, 0o755), stream)
        write_oci_archive(out, image.ref, recipe.runtime_config, [layer])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _install_venv(
    image: LocalImage, recipe: ImageRecipe, rootfs: Path, progress: Callable[[str], None]
) -> None:
    """The build stage: the venv with the requirements (within the constraints), the
    configuration script if any, and this checkout's package without its dependencies."""
    requirements = recipe.source_of(recipe.requirements)
    progress(f"{image.name}: venv {recipe.venv} and the wheels of {requirements}")
    run_in_rootfs(rootfs, ["python3", "-m", "venv", recipe.venv], "creating the venv")
    for copy in recipe.copies:
        _copy_into(rootfs, copy)
    wheels = rootfs / _WHEELS.lstrip("/")
    # The same files on both sides: pip here reads them in the tree, pip in the image by path.
    constraints = ["--constraint", recipe.constraints] if recipe.constraints else []
    files: list[str | Path] = [*constraints, "--requirement", recipe.requirements]
    _download_wheels(
        rootfs,
        recipe.venv,
        [_in(rootfs, arg) if arg.startswith("/") else arg for arg in map(str, files)],
        wheels,
    )
    progress(f"{image.name}: installing {requirements} into {recipe.venv} (offline, in the image)")
    run_in_rootfs(
        rootfs,
        [
            f"{recipe.venv}/bin/pip",
            "install",
            "--no-index",
            f"--find-links={_WHEELS}",
            *recipe.pip_options,
            *constraints,
            "--requirement",
            recipe.requirements,
        ],
        f"pip install --requirement {requirements}",
    )
    if recipe.configure_script is not None:
        run_in_rootfs(
            rootfs,
            ["sh", recipe.configure_script, recipe.venv],
            recipe.source_of(recipe.configure_script),
        )
    progress(
        f"{image.name}: this checkout's package (tre) into {recipe.venv}, without its dependencies"
    )
    run_in_rootfs(
        rootfs,
        [
            f"{recipe.venv}/bin/pip",
            "install",
            "--no-index",
            *recipe.package_options,
            _package_wheel(rootfs, recipe.package, wheels),
        ],
        f"pip install {' '.join(recipe.package_options)} {recipe.package}",
    )


def _npm_ci(node: NodeStage, rootfs: Path, scratch: Path) -> None:
    """The node stage: this machine's npm installs the lock file into a scratch directory (its
    registry and certificates, as pip's for the wheels), which becomes the stage's directory
    in the image, symbolic links (node_modules/.bin) kept. With --ignore-scripts nothing of
    the packages runs here."""
    scratch.mkdir()
    for copy in node.copies:
        shutil.copyfile(CONTEXT_DIR / copy.source, scratch / PurePosixPath(copy.target).name)
    _run(
        ["npm", "ci", "--no-audit", "--no-fund", *node.npm_options],
        f"npm ci {' '.join(node.npm_options)} of {node.copies[-1].source}",
        cwd=scratch,
    )
    shutil.copytree(scratch, _in(rootfs, node.directory), symlinks=True)


def _in(rootfs: Path, path: str) -> Path:
    return rootfs / path.lstrip("/")


def _package_wheel(rootfs: Path, project: str, into: Path) -> str:
    """The wheel of the project COPYed to `project`, built by this machine's pip (as
    `pip install <dir>` builds one in the Docker build, with the build backend pyproject.toml
    names fetched into an isolated environment), so nothing in the image needs the network.
    Its path inside the image."""
    before = set(into.glob("*.whl"))
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            into,
            _in(rootfs, project),
        ],
        f"building the wheel of {project} (pip wheel --no-deps)",
    )
    built = sorted(set(into.glob("*.whl")) - before)
    if len(built) != 1:
        raise DevClusterError(f"pip wheel of {project} made {len(built)} wheels, expected one")
    return f"/{built[0].relative_to(rootfs)}"


def _empty(directory: Path) -> None:
    """Remove what the build left in `directory` (the build stage's scratch), keeping it."""
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _forget_the_build_host(rootfs: Path) -> None:
    """mmdebstrap leaves the build host's name, resolver and apt sources in the tree. The
    container runtime mounts its own /etc/hostname and /etc/resolv.conf, and a workspace has
    no package archive to reach, so none of the three belongs in the image."""
    for name in ("etc/hostname", "etc/resolv.conf", "etc/apt/sources.list"):
        (rootfs / name).unlink(missing_ok=True)


def _remove_build_dir(work: Path, rootfs: Path) -> None:
    # Never recurse into a live mount (a /proc left by an interrupted mmdebstrap).
    mounted = [p for p in (rootfs / "proc", rootfs / "sys", rootfs / "dev") if os.path.ismount(p)]
    if mounted:
        raise DevClusterError(
            f"not removing {work}: {', '.join(map(str, mounted))} still mounted; unmount "
            "them (umount --lazy) and delete the directory"
        )
    shutil.rmtree(work, ignore_errors=True)


def build_node_images(
    cache_dir: Path, progress: Callable[[str], None], names: list[str] | None = None
) -> dict[str, Path]:
    """The images the dev node imports, by reference: pause, then those of LOCAL_IMAGES named
    in `names` (default: all)."""
    known = {image.name: image for image in LOCAL_IMAGES}
    unknown = sorted(set(names or []) - set(known))
    if unknown:
        raise DevClusterError(f"no image {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[name] for name in names] if names else list(LOCAL_IMAGES)
    built = {PAUSE_REF: build_pause_image(cache_dir)}
    for image in chosen:
        built[image.ref] = build_image(image, cache_dir, progress)
    return built


if __name__ == "__main__":  # `python -m provisioner.devcluster.images [name...]`: build, print
    from provisioner.devcluster.binaries import cache_dir as platform_cache_dir

    def _progress(message: str) -> None:
        print(f"[images] {message}", file=sys.stderr, flush=True)

    try:
        built = build_node_images(platform_cache_dir(), _progress, sys.argv[1:])
    except DevClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    for ref, path in built.items():
        print(f"{ref}\t{path}\t{path.stat().st_size // (1 << 20)} MiB")
