"""The node's resolver configuration (pure) and its pinned source.

Behaviours under test:
- the Corefile binds where told, answers exactly the given names, and ends every other query
  with NXDOMAIN; it names no forward plugin;
- the hub's and the airlock's service names follow the namespaces in the settings;
- the version the cache is keyed by is the one coredns/go.mod requires.
"""

from __future__ import annotations

import re

from provisioner.devcluster.binaries import COREDNS_SOURCE, COREDNS_VERSION
from provisioner.devcluster.dns import corefile, platform_names
from provisioner.models.settings import Settings


def test_the_corefile_answers_the_table_and_nothing_else() -> None:
    text = corefile("10.99.0.1", 53, {"hub.tre-hub.svc.cluster.local": "10.99.0.1"})
    assert text.startswith(".:53 {\n    bind 10.99.0.1\n")
    assert "        10.99.0.1 hub.tre-hub.svc.cluster.local\n" in text
    assert "rcode NXDOMAIN" in text
    assert "forward" not in text


def test_platform_names_follow_the_namespaces() -> None:
    settings = Settings(hub_namespace="jhub", airlock_namespace="out")
    assert platform_names(settings, "10.1.2.3") == {
        "hub.jhub.svc.cluster.local": "10.1.2.3",
        "tre-airlock.out.svc.cluster.local": "10.1.2.3",
    }


def test_the_cache_key_is_the_pinned_release() -> None:
    gomod = (COREDNS_SOURCE / "go.mod").read_text()
    (pinned,) = re.findall(r"^require github\.com/coredns/coredns (v\S+)$", gomod, re.M)
    assert pinned == COREDNS_VERSION
    main = (COREDNS_SOURCE / "main.go").read_text()
    assert "plugin/forward" not in main
