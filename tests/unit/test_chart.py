"""The Helm chart's generated files (helm/ucloud-tre/), without helm:

- the committed chart is exactly what `python -m provisioner.chart` writes (one source: the
  planners), so a changed policy, role or CRD cannot ship without its chart;
- every setting is placed exactly once: chosen by the operator, fixed by the chart, set by a
  pod's template, or not used in a cluster;
- values.yaml holds the model's defaults, and values.schema.json closes every object and
  describes every key;
- the generator refuses a setting it cannot template soundly.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import yaml

from provisioner.chart import generate, values
from provisioner.chart.generate import CHART_DIR, Substituted, render_chart
from provisioner.errors import InvalidInputError
from provisioner.models.settings import Settings


def test_the_committed_chart_is_what_the_generator_writes() -> None:
    for path, text in render_chart().items():
        assert (CHART_DIR / path).read_text() == text, (
            f"helm/ucloud-tre/{path} is out of date: run 'python -m provisioner.chart'"
        )


def test_every_setting_is_placed_exactly_once() -> None:
    groups = (
        values.OPERATOR_SETTINGS,
        values.FIXED_SETTINGS,
        values.POD_SETTINGS,
        values.NOT_IN_CLUSTER,
    )
    placed = [name for group in groups for name in group]
    assert sorted(placed) == sorted(Settings.model_fields)
    assert len(placed) == len(set(placed))


def test_values_yaml_holds_the_models_defaults() -> None:
    assert yaml.safe_load((CHART_DIR / "values.yaml").read_text()) == values.default_values()


def test_the_default_settings_are_valid_platform_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Defaults, not this process's environment (integration modules export a platform's).
    for name in [n for n in os.environ if n.startswith("TRE_")]:
        monkeypatch.delenv(name)
    chart = values.ChartValues().settings.model_dump()
    # The platform accepts them, and they mean what Settings' defaults mean.
    assert Settings(**chart).model_dump(include=set(chart)) == Settings().model_dump(
        include=set(chart)
    )


def _objects(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [("values", schema)]
    found += list(schema.get("$defs", {}).items())
    return [(name, s) for name, s in found if s.get("type") == "object" and "properties" in s]


def test_the_schema_closes_every_object_and_describes_every_key() -> None:
    schema = values.values_schema()
    objects = _objects(schema)
    assert len(objects) > 8
    for name, obj in objects:
        assert obj.get("additionalProperties") is False, name
        for key, prop in obj["properties"].items():
            assert prop.get("description"), f"{name}.{key} has no description"


def test_the_schema_refuses_what_the_policies_could_not_hold() -> None:
    with pytest.raises(ValueError, match="approverGroup"):
        values.ChartValues.model_validate({"settings": {"approverGroup": 'x" || true'}})
    with pytest.raises(ValueError, match="digest"):
        values.Image(repository="r", tag="t", digest="sha256:short")
    with pytest.raises(ValueError, match="extra"):
        values.ChartValues.model_validate({"hub": {"replicas": 2}})
    # a region becomes a flag value of the S3 mounter on every node
    with pytest.raises(ValueError, match="s3Region"):
        values.ChartValues.model_validate({"settings": {"s3Region": "us-east-1 --s3-versions"}})
    # bucket names are substituted into the platform-bucket policy's CEL
    with pytest.raises(ValueError, match="auditBucket"):
        values.ChartValues.model_validate({"settings": {"auditBucket": 'x" || true'}})


def test_a_setting_that_is_transformed_is_not_templated() -> None:
    # The controller's user name is not only written whole: its RoleBinding subject is the
    # ServiceAccount's namespace and name, split out of it.
    account = "system:serviceaccount:tre-system:tre-sentinel"
    user = Substituted("controller_user", f"{account}-a", f"{account}-b", "{{ x }}")
    base = generate._planned(generate._settings(controller_user=f"{account}-a"))
    with pytest.raises(InvalidInputError, match="controller_user does not appear verbatim"):
        generate._prove_substitution(base, [user])
    base = generate._planned(generate._settings())
    unused = Substituted("retention_days", 4001, 4002, "{{ x }}")
    with pytest.raises(InvalidInputError, match="retention_days shapes no planned object"):
        generate._prove_substitution(base, [unused])


def test_policies_on_built_in_kinds_and_tre_system_are_kept_on_uninstall() -> None:
    text = (CHART_DIR / "templates/generated/admission-policies.yaml").read_text()
    documents = text.split("\n---\n")
    kept = {d.split("name: ")[1].split("\n")[0] for d in documents if "resource-policy" in d}
    assert "tre-pod-requires-deny-all" in kept  # NetworkPolicy as parameter (#130887)
    assert "tre-pod-workspace-access" in kept  # ConfigMap as parameter
    assert "tre-workspace-controller-only" not in kept  # a custom resource: removed
    namespaces = yaml.safe_load_all(
        (CHART_DIR / "templates/generated/platform-namespaces.yaml").read_text()
    )
    kept_namespaces = [
        n["metadata"]["name"]
        for n in namespaces
        if n["kind"] == "Namespace"
        and "helm.sh/resource-policy" in n["metadata"].get("annotations", {})
    ]
    assert kept_namespaces == ["tre-system"]  # the audit head, the Lease, the signing key
