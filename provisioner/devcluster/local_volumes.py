"""Project storage on the dev node: a StorageClass whose claims get a directory on the node.

A cluster gives `/project` a ReadWriteMany volume from its own storage (NFS, CephFS, a cloud
file store) through a default StorageClass; the planner asks for no class by name
(`TRE_PROJECT_STORAGE_CLASS` unset). The dev node has one node and no such storage, and the
upstream provisioners that would fill in (the CSI hostpath driver, its external-provisioner
sidecar) are not served by the Go module proxy here. So this module is the dev node's default
StorageClass and its provisioner, and nothing more:

- `storage_class()`: `tre-dev-local`, the default class (annotation), provisioner
  `tre.dev/local`, reclaim policy Delete, bound at once (one node: nothing to wait for);
- `provision_once()`: every Pending claim of that class gets a `local` PersistentVolume
  pinned to the node (nodeAffinity) and to that claim (claimRef), backed by a new directory
  `<root>/<claim uid>` owned by the notebook user's group (setgid, 2775, so members share
  files); a Released volume of ours loses its directory and its object.

It runs as root on the host, and PersistentVolumes are objects anyone with PV rights writes:
no field of an object names a host path. A directory is `<root>/<uid>` only for a uid in the
API server's UUID form, only when that resolves to a direct child of `<root>` that is not a
symlink, and a Released volume's directory is removed only when the volume is exactly the one
this provisioner made for that claim (its name and its path). Anything else is refused and
said, never created, chowned or deleted (`volume_directory`).

It runs as a recorded process of the platform (`python -m provisioner.devcluster.local_volumes`)
polling once a second: a dev platform has a handful of claims.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Any, Final

from provisioner.kube.api import Kube
from provisioner.kube.resources import RESOURCES
from provisioner.planning.storage import NOTEBOOK_GID, NOTEBOOK_UID

STORAGE_CLASS: Final = "tre-dev-local"
PROVISIONER: Final = "tre.dev/local"
PVS = RESOURCES[("v1", "PersistentVolume")]
PVCS = RESOURCES[("v1", "PersistentVolumeClaim")]
Manifest = dict[str, Any]
# metadata.uid as the API server writes it (a random RFC 4122 UUID, lower case).
UID_PATTERN: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class RefusedPath(ValueError):
    """An object names a host path outside the provisioner's own directories."""


def volume_name(uid: str) -> str:
    return f"local-{uid}"


def volume_directory(host_root: Path, uid: object) -> Path:
    """The directory of the claim with `uid` under `host_root`; RefusedPath for a uid that is
    not a UUID (a path, `..`) or whose directory is not a real directory right under the root
    (a symlink planted there would lead the chown or the delete anywhere)."""
    if not isinstance(uid, str) or not UID_PATTERN.fullmatch(uid):
        raise RefusedPath(f"claim uid {uid!r} is not a UUID")
    root = host_root.resolve()
    directory = root / uid
    try:
        if stat.S_ISLNK(os.lstat(directory).st_mode):
            raise RefusedPath(f"{directory} is a symbolic link")
    except FileNotFoundError:
        pass
    if directory.resolve().parent != root:
        raise RefusedPath(f"{directory} is not inside {root}")
    return directory


def storage_class() -> Manifest:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def volume_for(claim: Manifest, node: str, path: str) -> Manifest:
    """The PV that serves `claim` from `path` on `node` (pure)."""
    meta = claim["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume_name(meta["uid"]),
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
            "accessModes": list(claim["spec"]["accessModes"]),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "local": {"path": path},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


def provision_once(kube: Kube, host_root: Path, node_root: str, node: str) -> list[str]:
    """One round: volumes for new claims, clean-up of released ones. Returns what it did,
    and what it refused (an object that names a path outside `host_root`)."""
    done = []
    ours = {pv["metadata"]["name"]: pv for pv in kube.list(PVS) if _ours(pv)}
    for claim in kube.list(PVCS):
        spec, meta = claim["spec"], claim["metadata"]
        if spec.get("storageClassName") != STORAGE_CLASS or spec.get("volumeName"):
            continue
        if volume_name(meta["uid"]) in ours:
            continue  # made; the binder has not caught up yet
        try:
            directory = volume_directory(host_root, meta["uid"])
        except RefusedPath as exc:
            done.append(f"refused claim {meta['namespace']}/{meta['name']}: {exc}")
            continue
        directory.mkdir(exist_ok=True)
        os.chown(directory, NOTEBOOK_UID, NOTEBOOK_GID, follow_symlinks=False)
        directory.chmod(0o2775)
        kube.create(volume_for(claim, node, f"{node_root}/{meta['uid']}"))
        done.append(f"provisioned {meta['namespace']}/{meta['name']}")
    for name, pv in ours.items():
        if (pv.get("status") or {}).get("phase") != "Released":
            continue
        spec = pv.get("spec") or {}
        uid = (spec.get("claimRef") or {}).get("uid")
        try:
            directory = volume_directory(host_root, uid)
            # Only the volume made for that claim, at the path made for it: another object
            # naming a live claim's uid must not take that claim's files with it.
            if name != volume_name(str(uid)) or spec.get("local") != {"path": f"{node_root}/{uid}"}:
                raise RefusedPath(f"{name} is not the volume made for claim uid {uid}")
        except RefusedPath as exc:
            done.append(f"refused to clean up {name}: {exc}")
            continue
        shutil.rmtree(directory, ignore_errors=True)
        kube.delete(PVS, name)
        done.append(f"deleted {name}")
    return done


def _ours(pv: Manifest) -> bool:
    annotations = pv["metadata"].get("annotations") or {}
    return annotations.get("pv.kubernetes.io/provisioned-by") == PROVISIONER


def main() -> None:
    from provisioner.kube.client import api_client

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--host-root", type=Path, required=True, help="the directories, here")
    parser.add_argument("--node-root", required=True, help="the same directory, in the node")
    parser.add_argument("--node", required=True)
    args = parser.parse_args()
    kube = Kube(api_client(args.kubeconfig), field_manager="tre-dev-local-volumes")
    kube.apply(storage_class())
    print("local volumes ready", flush=True)
    refusals: set[str] = set()  # a hostile object stays: say so once, not every second
    while True:
        try:
            for line in provision_once(kube, args.host_root, args.node_root, args.node):
                if line in refusals:
                    continue
                if line.startswith("refused"):
                    refusals.add(line)
                print(line, flush=True)
        except Exception as exc:  # a dev helper: say it and try again
            print(f"error: {exc}", flush=True)
        time.sleep(1)


if __name__ == "__main__":
    main()
