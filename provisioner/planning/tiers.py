"""Compute tiers: what a project's notebooks may use, as a ResourceQuota and a LimitRange.

The quota caps the whole namespace; the LimitRange gives every container that sets nothing a
request and a limit (the quota rejects pods without them) and caps a single notebook. Memory
requests equal memory limits so a notebook is killed only beyond what it was promised, never
because a neighbour on the node used more than it asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from provisioner import API_GROUP
from provisioner.models.types import ComputeTier
from provisioner.planning import names


@dataclass(frozen=True)
class TierResources:
    """Kubernetes quantities of one compute tier."""

    # Namespace totals (ResourceQuota): all notebook pods of the project together.
    quota_requests_cpu: str
    quota_limits_cpu: str
    quota_memory: str
    quota_pods: int
    # One container (LimitRange): used when the container sets nothing.
    default_request_cpu: str
    default_limit_cpu: str
    default_memory: str
    # One container (LimitRange): the largest notebook a member may ask for.
    max_cpu: str
    max_memory: str


TIERS: Final = MappingProxyType(
    {
        ComputeTier.SMALL: TierResources(
            quota_requests_cpu="2",
            quota_limits_cpu="4",
            quota_memory="8Gi",
            quota_pods=4,
            default_request_cpu="500m",
            default_limit_cpu="1",
            default_memory="2Gi",
            max_cpu="2",
            max_memory="8Gi",
        ),
        ComputeTier.MEDIUM: TierResources(
            quota_requests_cpu="8",
            quota_limits_cpu="16",
            quota_memory="32Gi",
            quota_pods=10,
            default_request_cpu="1",
            default_limit_cpu="2",
            default_memory="4Gi",
            max_cpu="4",
            max_memory="16Gi",
        ),
        ComputeTier.LARGE: TierResources(
            quota_requests_cpu="32",
            quota_limits_cpu="64",
            quota_memory="128Gi",
            quota_pods=20,
            default_request_cpu="2",
            default_limit_cpu="4",
            default_memory="8Gi",
            max_cpu="16",
            max_memory="64Gi",
        ),
    }
)


def resource_quota(
    project: str, tier: ComputeTier, planned_claims: int, *, max_exports: int
) -> dict[str, Any]:
    """The namespace's ResourceQuota; `planned_claims` is the number of PVCs the plan holds,
    `max_exports` the ExportRequests the project may ever file (`max_export_requests`)."""
    resources = TIERS[tier]
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": names.object_metadata(
            names.RESOURCE_QUOTA_NAME, project, namespace=names.namespace_name(project)
        ),
        "spec": {
            "hard": {
                "requests.cpu": resources.quota_requests_cpu,
                "limits.cpu": resources.quota_limits_cpu,
                "requests.memory": resources.quota_memory,
                "limits.memory": resources.quota_memory,
                "pods": str(resources.quota_pods),
                # Twice the planned claims: when every dataset is swapped at once the new
                # claims are created before the old ones are pruned. The hub may create PVCs
                # here, and this bounds how many.
                "persistentvolumeclaims": str(2 * planned_claims),
                # A notebook must never be reachable from outside the cluster.
                "services.nodeports": "0",
                "services.loadbalancers": "0",
                # Exports are never deleted, so this bounds what a project files in its life:
                # each one costs checkers' attention and audit entries (F20).
                f"count/exportrequests.{API_GROUP}": count_quantity(max_exports),
            }
        },
    }


def count_quantity(count: int) -> str:
    """`count` as the API server writes it back (its canonical quantity: 1000 is "1k"), so
    an unchanged quota is no drift."""
    for suffix in ("", "k", "M", "G"):
        if count < 1000 or count % 1000:
            return f"{count}{suffix}"
        count //= 1000
    return f"{count}T"


def limit_range(project: str, tier: ComputeTier) -> dict[str, Any]:
    resources = TIERS[tier]
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": names.object_metadata(
            names.LIMIT_RANGE_NAME, project, namespace=names.namespace_name(project)
        ),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "defaultRequest": {
                        "cpu": resources.default_request_cpu,
                        "memory": resources.default_memory,
                    },
                    "default": {
                        "cpu": resources.default_limit_cpu,
                        "memory": resources.default_memory,
                    },
                    "max": {"cpu": resources.max_cpu, "memory": resources.max_memory},
                }
            ]
        },
    }
