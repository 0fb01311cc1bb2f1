"""The dev node's project storage (pure part): each claim gets exactly one volume.

Behaviours under test:
- the StorageClass is the default one, deletes released volumes, binds at once;
- a claim's volume is reserved for that claim (namespace, name and uid), pinned to the node,
  has the claim's size and access modes, and lives in a directory named after the claim's uid;
- a claim's directory is a real directory right under the root, for a UUID only: a path, `..`,
  or a symlink planted under the root is refused (the live attack: tests/integration/
  test_dev_host.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.devcluster.local_volumes import (
    STORAGE_CLASS,
    RefusedPath,
    storage_class,
    volume_directory,
    volume_for,
)

UID = "0f8fad5b-d9cb-469f-a165-70867728950e"

CLAIM = {
    "metadata": {"name": "project-storage", "namespace": "tre-cardio", "uid": "u-1"},
    "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}},
}


def test_the_class_is_the_default_and_binds_at_once() -> None:
    sc = storage_class()
    assert sc["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    assert (sc["reclaimPolicy"], sc["volumeBindingMode"]) == ("Delete", "Immediate")


def test_a_claims_volume_is_reserved_for_it_on_the_node() -> None:
    pv = volume_for(CLAIM, "tre-node", "/var/lib/tre-volumes/u-1")
    spec = pv["spec"]
    assert pv["metadata"]["name"] == "local-u-1"
    assert spec["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "tre-cardio",
        "name": "project-storage",
        "uid": "u-1",
    }
    assert spec["storageClassName"] == STORAGE_CLASS
    assert spec["capacity"] == {"storage": "10Gi"}
    assert spec["accessModes"] == ["ReadWriteMany"]
    assert spec["local"] == {"path": "/var/lib/tre-volumes/u-1"}
    (term,) = spec["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["tre-node"]}
    ]


def test_a_uuid_names_a_directory_right_under_the_root(tmp_path: Path) -> None:
    assert volume_directory(tmp_path, UID) == tmp_path.resolve() / UID


@pytest.mark.parametrize(
    "uid",
    [
        "/root/important",
        "../../etc",
        f"{UID}/../../x",
        "..",
        "",
        UID.upper(),
        f"{UID}\n",
        None,
        42,
    ],
)
def test_anything_but_a_uuid_is_refused(tmp_path: Path, uid: object) -> None:
    with pytest.raises(RefusedPath, match="is not a UUID"):
        volume_directory(tmp_path, uid)


def test_a_symlink_under_the_root_is_refused(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / UID).symlink_to(elsewhere)
    with pytest.raises(RefusedPath, match="symbolic link"):
        volume_directory(root, UID)
