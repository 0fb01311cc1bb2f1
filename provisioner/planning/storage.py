"""Storage of a workspace: approved datasets, read-only, and the shared project volume.

A dataset is read-only at every layer (security invariant 3), because each layer alone can be
undone by a mistake in another:

- the PersistentVolume: `csi.readOnly` / `nfs.readOnly` and the read-only mount options, so
  the driver mounts read-only whatever the pod asks for;
- the pod volume: `persistentVolumeClaim.readOnly`, which also forces read-only in every
  volumeMount of it;
- the volumeMount: `readOnly`.

Each (project, dataset) pair gets its own PV, reserved for exactly one PVC in the project's
namespace (`claimRef` on the PV, `volumeName` on the PVC, and no storage class on either, so
no default class and no other claim can take it). The PV leaves `storageClassName` out rather
than setting "": the API server drops an empty class from a PV, and a declared field that never
reads back would make every resync rewrite the PV. The PVC must say "" explicitly, or the
default StorageClass would be filled in. Access modes are only a matching hint in
Kubernetes; they do not protect anything on their own.

S3 datasets are mounted by the CSI driver `settings.dataset_csi_driver` names, and each driver
reads its PV differently (`_s3_volume_source`). Neither ever gets credentials from the PV: the
node plugin reads S3 with its own read-only credentials (its environment or shared credentials
file), so no PV, and no one who could write one, can choose whose keys mount a bucket. The
endpoint of a non-AWS S3 server reaches the driver from the platform's settings
(`s3_endpoint_url`), never from a project.

This is the pure plan; `provisioner.storage` is the S3 I/O edge, a different thing.
"""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any, Final, NamedTuple

from provisioner.errors import InvalidInputError
from provisioner.models.resources import (
    DatasetSource,
    S3Source,
    Workspace,
    WorkspaceDataset,
)
from provisioner.models.settings import Settings
from provisioner.models.types import DatasetCsiDriver
from provisioner.planning import names
from provisioner.planning.datasets import s3_region

# jovyan and its group `users` in the Jupyter docker-stacks images; the hub runs notebooks
# with this uid and fsGroup, and S3 files must look readable to them.
NOTEBOOK_UID: Final = 1000
NOTEBOOK_GID: Final = 100
DATA_ROOT: Final = "/data"
PROJECT_MOUNT_PATH: Final = "/project"
# Kubernetes requires a PV capacity and a matching PVC request; neither the S3 driver nor NFS
# enforces it for a static volume, so one nominal size is enough for binding.
NOMINAL_CAPACITY: Final = "1Gi"


class NotebookStorage(NamedTuple):
    """What KubeSpawner adds to each notebook pod: `volumes` and `volume_mounts`."""

    volumes: list[dict[str, Any]]
    volume_mounts: list[dict[str, Any]]


def workspace_datasets(workspace: Workspace) -> list[WorkspaceDataset]:
    """The workspace's datasets sorted by name, so plans do not depend on request order."""
    counts = Counter(dataset.name for dataset in workspace.spec.datasets)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise InvalidInputError(
            f"workspace {workspace.name}: spec.datasets lists {duplicates} more than once; "
            "each dataset must appear once (merge the approvals that name it)"
        )
    return sorted(workspace.spec.datasets, key=lambda dataset: dataset.name)


def dataset_mount_path(dataset: str) -> str:
    return f"{DATA_ROOT}/{dataset}"


def dataset_persistent_volume(
    project: str, dataset: WorkspaceDataset, settings: Settings
) -> dict[str, Any]:
    """The PV of one approved dataset, reserved for the project's claim of it."""
    pv_name = names.dataset_pv_name(project, dataset.name)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": names.object_metadata(
            pv_name,
            project,
            labels={names.LABEL_DATASET: dataset.name},
            annotations={names.ANNOTATION_MANIFEST: dataset.manifest_sha256},
        ),
        "spec": {
            "capacity": {"storage": NOMINAL_CAPACITY},
            "accessModes": ["ReadOnlyMany"],
            # Deleting the PV must never touch the data: Delete or Recycle would.
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {
                "namespace": names.namespace_name(project),
                "name": names.dataset_pvc_name(dataset.name),
            },
            **_volume_source(pv_name, dataset.source, settings),
        },
    }


def dataset_claim(project: str, dataset: WorkspaceDataset) -> dict[str, Any]:
    """The PVC that binds only to the dataset's PV."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": names.object_metadata(
            names.dataset_pvc_name(dataset.name),
            project,
            namespace=names.namespace_name(project),
            labels={names.LABEL_DATASET: dataset.name},
            annotations={names.ANNOTATION_MANIFEST: dataset.manifest_sha256},
        ),
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            # Explicitly empty, or the default StorageClass is filled in and binding fails.
            "storageClassName": "",
            "volumeName": names.dataset_pv_name(project, dataset.name),
            "resources": {"requests": {"storage": NOMINAL_CAPACITY}},
        },
    }


def project_storage_claim(project: str, settings: Settings) -> dict[str, Any]:
    """The project's shared, writable `/project` volume; it outlives a Frozen workspace."""
    spec: dict[str, Any] = {
        # Every member's notebook mounts it at once, possibly on different nodes.
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": settings.project_storage_size}},
    }
    if settings.project_storage_class is not None:
        spec["storageClassName"] = settings.project_storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": names.object_metadata(
            names.project_pvc_name(), project, namespace=names.namespace_name(project)
        ),
        "spec": spec,
    }


def notebook_storage(workspace: Workspace) -> NotebookStorage:
    """Pod volumes and mounts for KubeSpawner: datasets read-only, project storage writable."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for dataset in workspace_datasets(workspace):
        volume = names.dataset_volume_name(dataset.name)
        volumes.append(
            {
                "name": volume,
                "persistentVolumeClaim": {
                    "claimName": names.dataset_pvc_name(dataset.name),
                    "readOnly": True,
                },
            }
        )
        mounts.append(
            {"name": volume, "mountPath": dataset_mount_path(dataset.name), "readOnly": True}
        )
    volumes.append(
        {
            "name": names.PROJECT_VOLUME_NAME,
            "persistentVolumeClaim": {"claimName": names.project_pvc_name()},
        }
    )
    mounts.append({"name": names.PROJECT_VOLUME_NAME, "mountPath": PROJECT_MOUNT_PATH})
    return NotebookStorage(volumes=volumes, volume_mounts=mounts)


def dataset_driver_objects(settings: Settings) -> list[dict[str, Any]]:
    """What the cluster needs from us for the configured S3 driver: for k8s-csi-s3 its
    CSIDriver and the Secret its node plugin reads at NodeStage; nothing for Mountpoint, whose
    own installation brings its CSIDriver and its configuration."""
    if settings.dataset_csi_driver is not DatasetCsiDriver.K8S_CSI_S3:
        return []
    return [_csi_driver(settings.dataset_csi_driver), _dataset_driver_secret(settings)]


def _csi_driver(driver: DatasetCsiDriver) -> dict[str, Any]:
    """Tells the kubelet how to treat the driver's volumes. Without it the kubelet waits for a
    VolumeAttachment that no attacher of ours will ever write."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": {"name": driver.value, "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY}},
        "spec": {
            # S3 has nothing to attach: the node plugin mounts directly.
            "attachRequired": False,
            "podInfoOnMount": False,
            # Never chown or chmod a dataset for a pod's fsGroup: it is read-only, and the
            # mount options already give the notebook user and group.
            "fsGroupPolicy": "None",
            # No inline (ephemeral) volumes: a pod could name any bucket in one.
            "volumeLifecycleModes": ["Persistent"],
            "requiresRepublish": False,
            "seLinuxMount": False,
        },
    }


def _dataset_driver_secret(settings: Settings) -> dict[str, Any]:
    """The Secret the k8s-csi-s3 node plugin reads at NodeStage.

    k8s-csi-s3 (v0.43) builds an S3 client from the NodeStage secrets before it mounts, and
    refuses an empty endpoint, so its PVs must name a stage Secret. This one holds the endpoint
    and region, which are configuration, not credentials: the access keys it could also hold
    are left out, so rclone (`--s3-env-auth`) falls back to the node plugin's own shared
    credentials file. It lives in tre-system, which no project can write, and the admission
    policy lets the controller name no other Secret in a PV.
    """
    # The Settings validator guarantees an endpoint for this driver.
    assert settings.s3_endpoint_url is not None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": names.DATASET_S3_SECRET,
            "namespace": names.SYSTEM_NAMESPACE,
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY},
        },
        "type": "Opaque",
        # stringData is write-only (the server folds it into data), so it would never
        # read back and drift detection would rewrite the Secret on every pass.
        "data": {
            "endpoint": _base64(settings.s3_endpoint_url),
            "region": _base64(settings.s3_region),
        },
    }


def _base64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _volume_source(pv_name: str, source: DatasetSource, settings: Settings) -> dict[str, Any]:
    """`mountOptions` plus the `csi` or `nfs` source of a dataset PV."""
    if source.s3 is not None:
        return _s3_volume_source(pv_name, source.s3, settings)
    if source.nfs is not None:
        return {
            "mountOptions": list(NFS_MOUNT_OPTIONS),
            "nfs": {"server": source.nfs.server, "path": source.nfs.path, "readOnly": True},
        }
    # DatasetSource's validator guarantees exactly one source; this keeps mypy and readers sure.
    raise InvalidInputError("dataset source: set exactly one of 's3' and 'nfs'")


# Flags of `rclone mount` on every k8s-csi-s3 dataset PV, appended after the driver's own (a
# later flag wins); `--s3-region <region>` follows. The admission policy `tre-controller-scope`
# lets the controller write no other options.
RCLONE_OPTIONS: Final = (
    # Generic S3 instead of the driver's "AWS": rclone's AWS profile addresses buckets
    # by virtual host (bucket.host), which a non-AWS endpoint given by IP address
    # cannot resolve (each lookup is a DNS query off the node); this one uses paths.
    "--s3-provider Other",
    # A read-only FUSE mount: writes fail with EROFS in the kernel, before any S3
    # request, whatever the pod asks for. The driver's own bind mount into the pod
    # ignores NodePublish's readonly flag, so this is the driver's read-only layer.
    "--read-only",
    f"--uid {NOTEBOOK_UID}",
    f"--gid {NOTEBOOK_GID}",
    "--dir-perms 0550",
    "--file-perms 0440",
)
# Mount options of every Mountpoint dataset PV; `prefix <p>`, `region <r>` and `endpoint-url
# <url>` may follow, and the admission policy lets the controller write no others.
MOUNTPOINT_OPTIONS: Final = (
    "read-only",
    # Mountpoint runs as its own user; without these the notebook user could not
    # read the files. Driver v2 would derive them from fsGroup, v1 needs them.
    "allow-other",
    f"uid={NOTEBOOK_UID}",
    f"gid={NOTEBOOK_GID}",
)
# The NFS PV's mount options, the only ones the admission policy lets the controller write.
NFS_MOUNT_OPTIONS: Final = ("ro", "nfsvers=4.1")


def rclone_options(region: str) -> str:
    """The `options` volume attribute of a k8s-csi-s3 PV. The driver splits it on
    whitespace into rclone arguments: `region` is an `S3Region`, one word."""
    return " ".join([*RCLONE_OPTIONS, f"--s3-region {region}"])


def _s3_volume_source(pv_name: str, s3: S3Source, settings: Settings) -> dict[str, Any]:
    """What the configured S3 CSI driver needs to mount `s3` read-only for the notebook user.

    Bucket, prefix and region come from the Dataset (domain types: one word each, no leading
    '-'); the endpoint and the default region from the platform's settings.
    """
    region = s3_region(s3, settings)
    if settings.dataset_csi_driver is DatasetCsiDriver.K8S_CSI_S3:
        return {
            "csi": {
                "driver": settings.dataset_csi_driver.value,
                # k8s-csi-s3 reads the bucket and prefix from the handle ("bucket/prefix").
                # Two projects' PVs of one dataset share it, so on one node the kubelet stages
                # the dataset once and publishes it into each pod; both read the same data.
                "volumeHandle": f"{s3.bucket}/{s3.prefix}" if s3.prefix else s3.bucket,
                "readOnly": True,
                "nodeStageSecretRef": {
                    "name": names.DATASET_S3_SECRET,
                    "namespace": names.SYSTEM_NAMESPACE,
                },
                # rclone, not the driver's default geesefs: geesefs builds only with its own
                # fork of aws-sdk-go, which its Go module leaves out (docs/architecture.md).
                "volumeAttributes": {"mounter": "rclone", "options": rclone_options(region)},
            },
        }
    options = list(MOUNTPOINT_OPTIONS)
    if s3.prefix:
        options.append(f"prefix {s3.prefix}")
    options.append(f"region {region}")
    if settings.s3_endpoint_url is not None:
        options.append(f"endpoint-url {settings.s3_endpoint_url}")
    return {
        "mountOptions": options,
        "csi": {
            "driver": settings.dataset_csi_driver.value,
            # The driver handles each volumeHandle once, so it must be unique per PV;
            # the PV name already is.
            "volumeHandle": pv_name,
            "readOnly": True,
            "volumeAttributes": {"bucketName": s3.bucket},
        },
    }
