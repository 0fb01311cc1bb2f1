"""The local airlock's credentials (`devcluster.airlock.airlock_kubeconfig`, and its S3 key
`devcluster.s3server.airlock_credentials`), before any I/O.

Behaviours under test:
- an `airlock_user` that is not a ServiceAccount in `airlock_namespace` is refused naming the
  setting and the fix, before the cluster is touched (the integration tests in
  tests/integration/test_airlock_trust.py use the kubeconfig it writes);
- the airlock's S3 identity holds no action until it is scoped, then exactly read, write and
  list on its two buckets and read on the fingerprints, each limited to its bucket (the real
  server's refusals: tests/integration/test_airlock_reach.py); its key is not the admin's;
  asked for other buckets than the server was started with, it is refused naming the fix,
  never handed out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.devcluster.airlock import airlock_kubeconfig
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.s3server import (
    AirlockScope,
    _ensure_credentials,
    _Paths,
    _scope_airlock,
    airlock_credentials,
)
from provisioner.errors import DevClusterError, InvalidInputError
from provisioner.models.settings import Settings


@pytest.mark.parametrize("user", ["airlock-robot", "system:serviceaccount:elsewhere:tre-airlock"])
def test_an_identity_that_is_not_its_service_account_is_refused(tmp_path: Path, user: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        airlock_kubeconfig(DevCluster(tmp_path), Settings(airlock_user=user))
    assert str(refused.value) == (
        f"airlock_user: {user!r} is not a ServiceAccount in airlock_namespace 'tre-airlock'; "
        "the local airlock needs one (set "
        "TRE_AIRLOCK_USER=system:serviceaccount:tre-airlock:tre-airlock)"
    )
    assert not (tmp_path / "airlock").exists()


def test_the_airlocks_s3_key_reaches_its_buckets_only(tmp_path: Path) -> None:
    paths = _Paths(tmp_path)
    admin_key, _ = _ensure_credentials(paths)
    scope = AirlockScope.of(Settings())
    with pytest.raises(DevClusterError, match="reaches \\[\\], not the buckets"):
        airlock_credentials(tmp_path, scope)  # not scoped yet: no action at all
    _scope_airlock(paths, scope)
    key, _ = airlock_credentials(tmp_path, scope)
    assert key != admin_key
    assert scope.actions() == [
        "Read:tre-quarantine", "Write:tre-quarantine", "List:tre-quarantine",
        "Read:tre-egress", "Write:tre-egress", "List:tre-egress",
        "Read:tre-dataset-fingerprints",
    ]  # fmt: skip
    elsewhere = AirlockScope.of(Settings(airlock_quarantine_bucket="other-q"))
    with pytest.raises(DevClusterError) as refused:
        airlock_credentials(tmp_path, elsewhere)
    assert "run 'tre dev down' and 'tre dev up' with the same TRE_AIRLOCK_QUARANTINE_BUCKET" in (
        str(refused.value)
    )
