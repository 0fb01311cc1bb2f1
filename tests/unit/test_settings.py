"""Settings: defaults are safe, the environment is read with the TRE_ prefix, secrets stay
secret, a storage size the API server would rewrite is refused with the canonical form, and a
dataset driver that cannot work without an endpoint is refused before anything is planned;
the airlock has an identity of its own, and the output checker group it may impersonate is
never a 'system:' group."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier


def test_safe_defaults() -> None:
    settings = Settings()
    assert settings.two_approver_tier is ClassificationTier.CONFIDENTIAL
    assert settings.max_request_days == 365
    assert settings.audit_retention_days == 3650
    assert settings.controller_user == "system:serviceaccount:tre-system:tre-controller"
    assert settings.airlock_user == "system:serviceaccount:tre-airlock:tre-airlock"


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRE_APPROVER_GROUP", "dac")
    monkeypatch.setenv("TRE_S3_SECRET_ACCESS_KEY", "hunter2")
    settings = Settings()
    assert settings.approver_group == "dac"
    assert isinstance(settings.s3_secret_access_key, SecretStr)
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("size", "hint"),
    [("10240Mi", "write 10Gi instead of 10240Mi"), ("2048Gi", "write 2Ti instead of 2048Gi")],
)
def test_non_canonical_storage_size_is_refused(size: str, hint: str) -> None:
    with pytest.raises(ValidationError, match=hint):
        Settings(project_storage_size=size)


@pytest.mark.parametrize("size", ["10G", "0Gi", "1.5Gi", "ten"])
def test_malformed_storage_size_is_refused(size: str) -> None:
    with pytest.raises(ValidationError, match="project_storage_size"):
        Settings(project_storage_size=size)


def test_k8s_csi_s3_without_an_endpoint_is_refused_naming_the_fix() -> None:
    with pytest.raises(ValidationError, match=r"ru\.yandex\.s3\.csi needs s3_endpoint_url: set "):
        Settings(dataset_csi_driver="ru.yandex.s3.csi", s3_endpoint_url=None)


def test_unknown_dataset_driver_is_refused() -> None:
    with pytest.raises(ValidationError, match="dataset_csi_driver"):
        Settings(dataset_csi_driver="efs.csi.aws.com")


def test_the_airlock_and_the_controller_are_different_identities() -> None:
    with pytest.raises(ValidationError, match="airlock_user: must differ from controller_user"):
        Settings(airlock_user="system:serviceaccount:tre-system:tre-controller")


@pytest.mark.parametrize("group", ["system:masters", "system:nodes", ""])
def test_the_output_checker_group_is_not_a_system_group(group: str) -> None:
    with pytest.raises(ValidationError, match="the airlock impersonates it for output checkers"):
        Settings(output_checker_group=group)
