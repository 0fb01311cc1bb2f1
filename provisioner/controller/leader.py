"""Leader election with a coordination.k8s.io Lease, so two replicas never both act.

The holder renews every `renew_seconds`; another replica takes over only after the lease has
gone unrenewed for `duration_seconds`. Every write of the lease is an optimistic-concurrency
update (resourceVersion), so two candidates cannot both win the same takeover.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import uuid
from dataclasses import dataclass, field

from provisioner.errors import ConflictError
from provisioner.kube.api import Kube
from provisioner.kube.resources import RESOURCES

LEASES = RESOURCES[("coordination.k8s.io/v1", "Lease")]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _fmt(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


@dataclass
class LeaderElector:
    kube: Kube
    namespace: str
    name: str = "tre-controller"
    duration_seconds: int = 15
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}")

    def try_acquire(self) -> bool:
        """Take or renew the lease. True if we hold it afterwards."""
        now = _now()
        live = self.kube.get(LEASES, self.name, self.namespace)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration_seconds,
            "renewTime": _fmt(now),
        }
        try:
            if live is None:
                self.kube.create(
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": {**spec, "acquireTime": _fmt(now), "leaseTransitions": 0},
                    }
                )
                return True
            held = live.get("spec", {})
            holder = held.get("holderIdentity")
            renewed = held.get("renewTime")
            expired = (
                renewed is None
                or _parse(renewed)
                + dt.timedelta(seconds=held.get("leaseDurationSeconds", self.duration_seconds))
                < now
            )
            if holder != self.identity and not expired:
                return False
            if holder != self.identity:
                spec["acquireTime"] = _fmt(now)
                spec["leaseTransitions"] = held.get("leaseTransitions", 0) + 1
            live["spec"] = {**held, **spec}
            self.kube.replace(live)
            return True
        except ConflictError:
            return False  # someone else wrote first; look again next round

    def holder(self) -> str | None:
        live = self.kube.get(LEASES, self.name, self.namespace)
        return None if live is None else live.get("spec", {}).get("holderIdentity")

    def release(self) -> None:
        live = self.kube.get(LEASES, self.name, self.namespace)
        if live and live.get("spec", {}).get("holderIdentity") == self.identity:
            live["spec"]["renewTime"] = _fmt(_now() - dt.timedelta(days=1))
            with contextlib.suppress(ConflictError):
                self.kube.replace(live)
