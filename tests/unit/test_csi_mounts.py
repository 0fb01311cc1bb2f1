"""Reading the driver's mounts out of /proc/<pid>/mountinfo (`devcluster.csi.mounts_of_type`):
only the wanted FUSE type, only at or below the kubelet directory, in mount order, with the
kernel's octal escapes undone, and optional fields of any number before the separator."""

from __future__ import annotations

from pathlib import Path

from provisioner.devcluster.csi import mounts_of_type

MOUNTINFO = "\n".join(
    [
        "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/root rw",
        "65 22 0:39 / /var/lib/kubelet/plugins/kubernetes.io/csi/ru.yandex.s3.csi/ab/globalmount "
        "ro,nosuid,nodev,relatime shared:30 master:2 - fuse.rclone :s3:b/p ro,user_id=0",
        "66 22 0:39 / /var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/my\\040data/mount "
        "ro,relatime - fuse.rclone :s3:b/p ro,user_id=0",
        "67 22 0:40 / /var/lib/kubelet-other/m ro - fuse.rclone :s3:c ro",
        "68 22 0:41 / /mnt/elsewhere ro - fuse.rclone :s3:d ro",
        "69 22 0:42 / /var/lib/kubelet/pods/y/volumes/kubernetes.io~empty-dir/e rw - tmpfs t rw",
    ]
)


def test_only_rclone_mounts_under_the_kubelet_directory_in_mount_order() -> None:
    assert mounts_of_type(MOUNTINFO, "fuse.rclone", Path("/var/lib/kubelet")) == [
        "/var/lib/kubelet/plugins/kubernetes.io/csi/ru.yandex.s3.csi/ab/globalmount",
        "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/my data/mount",
    ]


def test_nothing_mounted_is_an_empty_list() -> None:
    assert mounts_of_type(MOUNTINFO, "fuse.rclone", Path("/srv/kubelet")) == []
