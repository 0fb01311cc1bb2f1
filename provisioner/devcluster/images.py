"""Container images for the dev node, built on this machine: no Docker, no registry.

The node's containerd takes images with ``ctr images import`` from an OCI image-layout tar
(https://github.com/opencontainers/image-spec/blob/main/image-layout.md). This module writes
those tars with the standard library only, and builds the two images the node needs:

- the pause (sandbox) image, our own ``images/pause/pause.c`` compiled static, tagged
  ``registry.k8s.io/pause:3.10.2``: containerd 2.3.7's default sandbox image, so containerd
  finds it by that name and pins it;
- the notebook image (see ``build_notebook_image``).

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

import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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


def _sha256_of_stream(stream: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return f"sha256:{digest.hexdigest()}", size


def _describe_layer(path: Path) -> _Layer:
    """Digest, size, media type and diff_id of a layer tar, gzip or not (told by its magic)."""
    with path.open("rb") as stream:
        compressed = stream.read(2) == _GZIP_MAGIC
        stream.seek(0)
        digest, size = _sha256_of_stream(stream)
    if compressed:
        try:
            with gzip.open(path, "rb") as plain:
                diff_id, _ = _sha256_of_stream(plain)  # type: ignore[arg-type]
        except (OSError, EOFError) as exc:
            raise DevClusterError(
                f"layer {path} starts like gzip but does not unpack: {exc}"
            ) from exc
    else:
        diff_id = digest
    _check_is_tar(path)
    media_type = MEDIA_TYPE_LAYER_GZIP if compressed else MEDIA_TYPE_LAYER
    return _Layer(path, Descriptor(media_type, digest, size), diff_id)


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

        def blob(digest: str) -> bytes:
            member = members.get(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            if member is None:
                raise DevClusterError(f"{path}: blob {digest} is missing")
            stream = archive.extractfile(member)
            assert stream is not None
            data = stream.read()
            actual = f"sha256:{hashlib.sha256(data).hexdigest()}"
            if actual != digest:
                raise DevClusterError(f"{path}: blob {digest} holds bytes of digest {actual}")
            return data

        def document(descriptor: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
            data = blob(descriptor["digest"])
            if len(data) != descriptor["size"]:
                raise DevClusterError(f"{path}: {descriptor['digest']} size is not {len(data)}")
            return json.loads(data), data

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
        manifest, _ = document(entry)
        config, _ = document(manifest["config"])
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(manifest["layers"]):
            raise DevClusterError(
                f"{path}: {len(diff_ids)} diff_ids for {len(manifest['layers'])} layers"
            )
        for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            data = blob(layer["digest"])
            compressed = data[:2] == _GZIP_MAGIC
            expected_type = MEDIA_TYPE_LAYER_GZIP if compressed else MEDIA_TYPE_LAYER
            if layer["mediaType"] != expected_type:
                raise DevClusterError(
                    f"{path}: layer {layer['digest']} is not {layer['mediaType']}"
                )
            plain = gzip.decompress(data) if compressed else data
            if f"sha256:{hashlib.sha256(plain).hexdigest()}" != diff_id:
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
