"""The OCI image-layout writer of provisioner.devcluster.images, checked against the spec by
reading the tar back independently (tarfile, hashlib, json; not through the module's reader).

Behaviours under test:
- the archive is an image layout: `oci-layout` 1.0.0, `index.json` with one manifest, every
  blob under blobs/sha256/ named by the sha256 of its bytes, sizes as in the descriptors;
- the index entry names the image for containerd (`io.containerd.image.name`: the full
  reference) and for the spec (`org.opencontainers.image.ref.name`: the tag), with the host
  platform;
- the config carries the runtime config given, and rootfs.diff_ids are the digests of the
  uncompressed layers in order; gzip layers keep their bytes and get the +gzip media type;
- the same inputs give the same bytes; a layer used twice is stored once;
- short references, empty layer lists and layers that are not tars are refused with the fix;
- the reader refuses an archive whose blob was altered or whose diff_id is wrong.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from provisioner.devcluster.images import (
    ANNOTATION_CONTAINERD_NAME,
    ANNOTATION_REF_NAME,
    MEDIA_TYPE_LAYER,
    MEDIA_TYPE_LAYER_GZIP,
    host_architecture,
    read_oci_archive,
    split_reference,
    write_oci_archive,
)
from provisioner.errors import DevClusterError

REF = "docker.io/ucloud-tre/notebook:0.1.0"
RUNTIME = {"User": "1000:100", "Entrypoint": ["tini", "--"], "Cmd": ["jupyterhub-singleuser"]}


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def layer_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.fixture
def plain_layer(tmp_path: Path) -> Path:
    path = tmp_path / "base.tar"
    path.write_bytes(layer_tar({"etc/os-release": b"ID=debian\n"}))
    return path


@pytest.fixture
def gzip_layer(tmp_path: Path) -> Path:
    path = tmp_path / "app.tar.gz"
    path.write_bytes(gzip.compress(layer_tar({"opt/app": b"#!/bin/sh\n"}), mtime=0))
    return path


def contents(archive_path: Path) -> dict[str, bytes]:
    with tarfile.open(archive_path) as archive:
        return {
            member.name: archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
            if member.isfile()
        }


def blob(files: dict[str, bytes], digest: str) -> bytes:
    return files[f"blobs/sha256/{digest.removeprefix('sha256:')}"]


def written(tmp_path: Path, layers: list[Path]) -> tuple[dict[str, bytes], dict[str, Any]]:
    out = tmp_path / "image.tar"
    write_oci_archive(out, REF, RUNTIME, layers)
    files = contents(out)
    return files, json.loads(files["index.json"])


def test_archive_is_an_oci_image_layout(tmp_path: Path, plain_layer: Path) -> None:
    files, index = written(tmp_path, [plain_layer])

    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    assert index["schemaVersion"] == 2
    assert len(index["manifests"]) == 1
    for name, data in files.items():
        if name.startswith("blobs/"):
            assert name == f"blobs/sha256/{hashlib.sha256(data).hexdigest()}"


def test_index_names_the_image_for_containerd_and_for_the_spec(
    tmp_path: Path, plain_layer: Path
) -> None:
    _, index = written(tmp_path, [plain_layer])
    (entry,) = index["manifests"]

    assert entry["annotations"] == {ANNOTATION_CONTAINERD_NAME: REF, ANNOTATION_REF_NAME: "0.1.0"}
    assert entry["platform"] == {"architecture": host_architecture(), "os": "linux"}
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"


def test_manifest_config_and_diff_ids(tmp_path: Path, plain_layer: Path, gzip_layer: Path) -> None:
    files, index = written(tmp_path, [plain_layer, gzip_layer])
    entry = index["manifests"][0]
    manifest_bytes = blob(files, entry["digest"])
    manifest = json.loads(manifest_bytes)
    config_bytes = blob(files, manifest["config"]["digest"])
    config = json.loads(config_bytes)

    assert entry["size"] == len(manifest_bytes)
    assert manifest["config"]["size"] == len(config_bytes)
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert config["config"] == RUNTIME
    assert config["os"] == "linux"
    assert config["architecture"] == host_architecture()
    plain, zipped = plain_layer.read_bytes(), gzip_layer.read_bytes()
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        MEDIA_TYPE_LAYER,
        MEDIA_TYPE_LAYER_GZIP,
    ]
    assert [layer["digest"] for layer in manifest["layers"]] == [sha256(plain), sha256(zipped)]
    assert [layer["size"] for layer in manifest["layers"]] == [len(plain), len(zipped)]
    assert blob(files, sha256(zipped)) == zipped  # stored as given, not recompressed
    assert config["rootfs"] == {
        "type": "layers",
        "diff_ids": [sha256(plain), sha256(gzip.decompress(zipped))],
    }


def test_same_inputs_give_the_same_bytes(tmp_path: Path, plain_layer: Path) -> None:
    write_oci_archive(tmp_path / "a.tar", REF, RUNTIME, [plain_layer])
    write_oci_archive(tmp_path / "b.tar", REF, RUNTIME, [plain_layer])

    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_a_layer_used_twice_is_stored_once(tmp_path: Path, plain_layer: Path) -> None:
    files, _ = written(tmp_path, [plain_layer, plain_layer])

    assert sum(name.startswith("blobs/") for name in files) == 3  # layer, config, manifest


def test_returned_descriptor_is_the_manifest(tmp_path: Path, plain_layer: Path) -> None:
    out = tmp_path / "image.tar"
    descriptor = write_oci_archive(out, REF, RUNTIME, [plain_layer])
    (entry,) = json.loads(contents(out)["index.json"])["manifests"]

    assert (descriptor.digest, descriptor.size) == (entry["digest"], entry["size"])


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("registry.k8s.io/pause:3.10.2", ("registry.k8s.io/pause", "3.10.2")),
        (REF, ("docker.io/ucloud-tre/notebook", "0.1.0")),
        ("localhost:5000/a/b_c:v1", ("localhost:5000/a/b_c", "v1")),
        ("localhost/spike-busybox:1", ("localhost/spike-busybox", "1")),
    ],
)
def test_full_references_split_into_name_and_tag(ref: str, expected: tuple[str, str]) -> None:
    assert split_reference(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        "ucloud-tre/notebook:0.1.0",  # no registry: containerd would store docker.io/...
        "notebook:0.1.0",
        "docker.io/ucloud-tre/notebook",  # no tag
        "docker.io/UCloud/notebook:1",  # upper case path
        "docker.io/ucloud-tre/notebook:1@sha256:" + "0" * 64,
    ],
)
def test_short_or_malformed_references_are_refused(
    tmp_path: Path, plain_layer: Path, ref: str
) -> None:
    with pytest.raises(DevClusterError, match=r"not fully qualified.*registry/path:tag"):
        write_oci_archive(tmp_path / "image.tar", ref, RUNTIME, [plain_layer])
    assert not (tmp_path / "image.tar").exists()


def test_no_layers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DevClusterError, match="at least one layer"):
        write_oci_archive(tmp_path / "image.tar", REF, RUNTIME, [])


def test_a_layer_that_is_not_a_tar_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "layer.tar"
    bogus.write_bytes(b"not a tar at all" * 64)

    with pytest.raises(DevClusterError, match=r"layer .*layer\.tar is not a tar archive"):
        write_oci_archive(tmp_path / "image.tar", REF, RUNTIME, [bogus])
    assert list(tmp_path.iterdir()) == [bogus]  # no partial archive left behind


def test_reader_accepts_what_the_writer_wrote(
    tmp_path: Path, plain_layer: Path, gzip_layer: Path
) -> None:
    out = tmp_path / "image.tar"
    descriptor = write_oci_archive(out, REF, RUNTIME, [plain_layer, gzip_layer])

    summary = read_oci_archive(out)

    assert (summary.ref, summary.tag, summary.manifest_digest) == (REF, "0.1.0", descriptor.digest)
    assert summary.config["config"] == RUNTIME


def rewrite(archive_path: Path, change: dict[str, bytes]) -> None:
    """Rewrite the tar with some members' bytes replaced (names kept)."""
    files = contents(archive_path)
    with tarfile.open(archive_path, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            payload = change.get(name, data)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))


def test_reader_refuses_an_altered_layer(tmp_path: Path, plain_layer: Path) -> None:
    out = tmp_path / "image.tar"
    write_oci_archive(out, REF, RUNTIME, [plain_layer])
    name = f"blobs/sha256/{hashlib.sha256(plain_layer.read_bytes()).hexdigest()}"
    rewrite(out, {name: layer_tar({"etc/os-release": b"ID=evil\n"})})

    with pytest.raises(DevClusterError, match="holds bytes of digest"):
        read_oci_archive(out)


def test_reader_refuses_a_wrong_diff_id(tmp_path: Path, gzip_layer: Path) -> None:
    out = tmp_path / "image.tar"
    write_oci_archive(out, REF, RUNTIME, [gzip_layer])
    files = contents(out)
    index = json.loads(files["index.json"])
    manifest = json.loads(blob(files, index["manifests"][0]["digest"]))
    config = json.loads(blob(files, manifest["config"]["digest"]))
    # The classic mistake: diff_id = digest of the compressed blob.
    config["rootfs"]["diff_ids"] = [manifest["layers"][0]["digest"]]
    config_bytes = json.dumps(config).encode()
    manifest["config"] = {
        **manifest["config"],
        "digest": sha256(config_bytes),
        "size": len(config_bytes),
    }
    manifest_bytes = json.dumps(manifest).encode()
    index["manifests"][0].update(digest=sha256(manifest_bytes), size=len(manifest_bytes))
    rewrite(out, {"index.json": json.dumps(index).encode()})
    with tarfile.open(out, "a") as archive:
        for data in (config_bytes, manifest_bytes):
            info = tarfile.TarInfo(f"blobs/sha256/{hashlib.sha256(data).hexdigest()}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

    with pytest.raises(DevClusterError, match=r"diff_id .* does not match its layer"):
        read_oci_archive(out)
