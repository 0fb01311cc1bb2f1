"""Arguments typed by the domain: `tre` refuses a bad project, dataset, user, bucket or
request name with the models' own words, exit code 2, before any call to the API server
(KUBECONFIG points nowhere: a check that ran later would say so instead)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.models.types import BucketName, DatasetName, ProjectSlug, Username
from tests.domain_values import DOMAIN_VALUES

runner = CliRunner()
BAD = {v.name: v.bad for v in DOMAIN_VALUES}


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")


class Model(BaseModel):
    project: ProjectSlug = "ab1"
    dataset: DatasetName = "abc"
    user: Username = "ann"
    bucket: BucketName = "bucket"


def model_says(field: str, value: str) -> str:
    """What the model (and so the API server's CRD message) says about `value`."""
    with pytest.raises(ValidationError) as err:
        Model.model_validate({field: value})
    return str(err.value.errors()[0]["msg"]).removeprefix("Value error, ")


def refused(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    return result.output


REGISTER = ["dataset", "register", "--title", "T", "--classification", "public"]


@pytest.mark.parametrize("slug", BAD["project_slug"])
@pytest.mark.parametrize(
    ("command", "label"),
    [
        (["workspace", "show"], "PROJECT"),
        (["workspace", "plan"], "PROJECT"),
        (["workspace", "reconcile"], "PROJECT"),
        (["request", "list", "--project"], "--project"),
    ],
)
def test_project_slug(command: list[str], label: str, slug: str) -> None:
    assert refused([*command, slug]) == f"error: {label}: {model_says('project', slug)}\n"


@pytest.mark.parametrize("name", BAD["dataset_name"])
@pytest.mark.parametrize("command", [["dataset", "show"], ["dataset", "verify"]])
def test_dataset_name(command: list[str], name: str) -> None:
    assert refused([*command, name]) == f"error: NAME: {model_says('dataset', name)}\n"


@pytest.mark.parametrize("user", BAD["username"])
def test_steward_username(user: str) -> None:
    output = refused([*REGISTER, "--steward", user, "--bucket", "bucket", "ds-one"])
    assert output == f"error: --steward: {model_says('user', user)}\n"


@pytest.mark.parametrize("bucket", ["ab", "a..b", "10.0.0.1", "Bucket"])
def test_bucket_name(bucket: str) -> None:
    output = refused([*REGISTER, "--steward", "sam", "--bucket", bucket, "ds-one"])
    assert output == f"error: --bucket: {model_says('bucket', bucket)}\n"


def test_s3_prefix_and_nfs_path() -> None:
    s3 = [*REGISTER, "--steward", "sam", "--bucket", "b12", "--prefix", "/x", "ds1"]
    assert refused(s3) == "error: --prefix: S3 prefix '/x' is invalid: remove the leading '/'\n"
    nfs = [*REGISTER, "--steward", "sam", "--nfs-server", "nfs.example.org", "--nfs-path",
           "/a/../b", "ds1"]  # fmt: skip
    assert refused(nfs) == (
        "error: --nfs-path: NFS path '/a/../b' is invalid: '.' and '..' segments are not allowed\n"
    )


# Every source field with the option syntax of the mounters that read it (rclone, mount-s3,
# mount.nfs, all run as root on the nodes; security review 3, S1), and the alternative
# spellings of a location (S5): refused by `tre` in the models' words, before any call.
SOURCE_FIELDS = {
    "--prefix": ("S3 prefix", ["--bucket", "b12"]),
    "--region": ("S3 region", ["--bucket", "b12"]),
    "--nfs-server": ("NFS server", ["--nfs-path", "/exports"]),
    "--nfs-path": ("NFS path", ["--nfs-server", "nfs.example.org"]),
}
INJECTIONS = (" --allow-other", "--vfs-cache-mode=full", "--no-check-certificate", "x,rw",
              "x\n--rc", "x --s3-versions", "x=y")  # fmt: skip


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("option", SOURCE_FIELDS)
def test_no_source_field_takes_mounter_syntax(option: str, value: str) -> None:
    what, rest = SOURCE_FIELDS[option]
    if option == "--nfs-path":
        value = "/" + value
    output = refused([*REGISTER, "--steward", "sam", *rest, option, value, "ds1"])
    assert output.startswith(f"error: {option}: {what} {value!r} is invalid: "), output


@pytest.mark.parametrize(
    "bucket", ["tre-audit", "tre-quarantine", "tre-egress", "tre-dataset-fingerprints"]
)
def test_the_platforms_buckets_are_refused_before_asking(bucket: str) -> None:
    output = refused([*REGISTER, "--steward", "sam", "--bucket", bucket, "ds1"])
    assert output == (
        f"error: dataset ds1: spec.source.s3.bucket: {bucket} is one of the platform's own "
        "buckets (tre-audit, tre-dataset-fingerprints, tre-egress, tre-quarantine): they hold "
        "the audit log, the airlock's unreviewed and released files of every project and the "
        "datasets' fingerprints, which no dataset may show; register data from a bucket of "
        "its own\n"
    )


@pytest.mark.parametrize("command", [["request", "show"], ["request", "approve"]])
def test_request_name(command: list[str]) -> None:
    assert refused([*command, "Heart_Study"]) == (
        "error: NAME: object name 'Heart_Study' is invalid: use lower-case a-z, 0-9, '-' and "
        "'.', starting and ending with a letter or digit (for example 'heart-study-3f2a1c')\n"
    )


def test_good_values_get_as_far_as_the_api_server() -> None:
    result = runner.invoke(app, ["workspace", "show", "diabetes-2026"])
    assert result.exit_code == 1
    assert "cannot load Kubernetes credentials" in result.output
