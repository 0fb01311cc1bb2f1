"""The local node's DNS resolver: the platform's names, and nothing else, ever.

Notebooks have this resolver as their only nameserver (settings.dns_resolver_ip, dnsPolicy
None) and their NetworkPolicy allows port 53 to it alone. A resolver that recursed would be an
open channel out: a lookup of `<data>.attacker.example` carries the data to whoever runs that
zone. This one is CoreDNS built without the `forward` plugin (coredns/main.go): it answers the
platform's service names from a fixed table and NXDOMAIN for every other name.

It runs inside the node's network namespace, bound to the node's address, so only the node
and its pods can reach it (`tre dev up --node`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from provisioner.models.settings import Settings
from provisioner.planning.names import AIRLOCK_SERVICE, HUB_SERVICE, service_fqdn


def platform_names(
    settings: Settings, address: str, airlock_address: str | None = None
) -> dict[str, str]:
    """Every name a notebook may resolve: the hub's at `address`, the airlock's at
    `airlock_address` (default `address`: on the local node both listen on the node's
    address; in a cluster, the chart gives each Service a fixed ClusterIP)."""
    return {
        service_fqdn(HUB_SERVICE, settings.hub_namespace): address,
        service_fqdn(AIRLOCK_SERVICE, settings.airlock_namespace): airlock_address or address,
    }


def corefile(bind: str, port: int, names: Mapping[str, str]) -> str:
    """A Corefile that answers `names` (name -> IPv4) and NXDOMAIN for everything else."""
    hosts = "\n".join(f"        {ip} {name}" for name, ip in sorted(names.items()))
    return (
        f".:{port} {{\n"
        f"    bind {bind}\n"
        "    errors\n"
        "    hosts {\n"
        f"{hosts}\n"
        # Not ours: on to the template, which ends every other query here.
        "        fallthrough\n"
        "    }\n"
        "    template ANY ANY {\n"
        "        rcode NXDOMAIN\n"
        "    }\n"
        "}\n"
    )


def write_corefile(state_dir: Path, *, bind: str, names: Mapping[str, str], port: int = 53) -> Path:
    """The resolver's Corefile in `state_dir`; CoreDNS runs with `-conf <it>`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    conf = state_dir / "Corefile"
    conf.write_text(corefile(bind, port, names))
    return conf
