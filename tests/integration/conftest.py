"""Fixtures shared by the integration tests of our custom resources."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from provisioner.planning.crds import plan_crds

FIELD_MANAGER = "tre-tests"


@pytest.fixture(scope="session")
def crds(admin_api: client.ApiClient) -> None:
    """Our three CRDs, server-side applied from `plan_crds()` and Established.

    They stay installed for the rest of the session (re-applying is idempotent); the platform
    is thrown away at the end.
    """
    ext = client.ApiextensionsV1Api(admin_api)
    planned = plan_crds()
    for crd in planned:
        ext.patch_custom_resource_definition(
            crd["metadata"]["name"],
            crd,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
    deadline = time.monotonic() + 60
    for crd in planned:
        name = crd["metadata"]["name"]
        while True:
            status = ext.read_custom_resource_definition(name).status
            conditions = {c.type: c for c in (status.conditions or [])}
            if "NonStructuralSchema" in conditions:
                pytest.fail(f"{name}: {conditions['NonStructuralSchema'].message}")
            established = conditions.get("Established")
            if established is not None and established.status == "True":
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{name} not Established after 60s: {status}")
            time.sleep(0.2)
