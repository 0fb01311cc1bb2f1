"""Images for the dev node, built for real on this machine (gcc, mmdebstrap, pip); no platform.

Behaviours under test:
- the pause image is a valid OCI archive named registry.k8s.io/pause:3.10.2, running /pause as
  65535:65535; its one file is a static executable (no interpreter: it runs in an empty root)
  that exits 0 on SIGTERM and on SIGINT and keeps running otherwise;
- a second build is a cache hit: the same path, not rewritten.
"""

from __future__ import annotations

import signal
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from provisioner.devcluster.images import PAUSE_REF, build_pause_image, read_oci_archive


@pytest.fixture(scope="module")
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image-cache")


@pytest.fixture(scope="module")
def pause_binary(image_cache: Path) -> Path:
    archive = build_pause_image(image_cache)
    summary = read_oci_archive(archive)
    (layer,) = summary.layer_digests
    out = image_cache / "pause-unpacked"
    out.mkdir()
    with tarfile.open(archive) as outer:
        blob = outer.extractfile(f"blobs/sha256/{layer.removeprefix('sha256:')}")
        assert blob is not None
        with tarfile.open(fileobj=blob) as inner:
            assert inner.getnames() == ["pause"]
            inner.extractall(out, filter="data")
    return out / "pause"


def test_pause_archive_names_and_config(image_cache: Path) -> None:
    summary = read_oci_archive(build_pause_image(image_cache))

    assert summary.ref == PAUSE_REF == "registry.k8s.io/pause:3.10.2"
    assert summary.config["config"] == {"User": "65535:65535", "Entrypoint": ["/pause"]}


def test_pause_build_is_cached(image_cache: Path) -> None:
    first = build_pause_image(image_cache)
    before = first.stat().st_mtime_ns

    assert build_pause_image(image_cache) == first
    assert first.stat().st_mtime_ns == before


def program_header_types(elf: bytes) -> list[int]:
    """p_type of each program header of a little-endian ELF64 file."""
    assert elf[:4] == b"\x7fELF" and elf[4] == 2 and elf[5] == 1, "not a little-endian ELF64"
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return [struct.unpack_from("<I", elf, phoff + n * phentsize)[0] for n in range(phnum)]


PT_INTERP = 3


def test_pause_is_a_static_executable(pause_binary: Path) -> None:
    types = program_header_types(pause_binary.read_bytes())

    assert types, "no program headers"
    assert PT_INTERP not in types, "dynamically linked: it would not start in an empty root"
    assert pause_binary.stat().st_mode & 0o111


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_pause_exits_zero_on_termination_signals(pause_binary: Path, sig: signal.Signals) -> None:
    with subprocess.Popen([pause_binary]) as proc:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)  # it waits: pause() in a loop
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0
