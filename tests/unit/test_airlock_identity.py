"""The local airlock's credential (`devcluster.airlock.airlock_kubeconfig`), before any I/O.

Behaviour under test: an `airlock_user` that is not a ServiceAccount in `airlock_namespace`
is refused naming the setting and the fix, before the cluster is touched (the integration
tests in tests/integration/test_airlock_trust.py use the kubeconfig it writes).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.devcluster.airlock import airlock_kubeconfig
from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import InvalidInputError
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
