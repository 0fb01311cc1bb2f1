"""Certificates and keys for the local development control plane.

One throwaway CA signs the apiserver's serving certificate and the client certificates of
the admin (group ``system:masters``, so it may impersonate anyone, like ``kubectl --as``) and
of the controller-manager. A separate RSA key pair signs ServiceAccount tokens.

etcd has a CA of its own (as kubeadm's ``etcd/ca``): it signs etcd's serving (and peer)
certificate and one client certificate, the apiserver's. etcd runs with ``--client-cert-auth``
and trusts only that CA, so no other certificate the platform issues (the admin's, a node's,
one the controller-manager signs for an approved CSR) opens etcd, and neither does a local
user without the key: whoever writes to etcd directly is cluster-admin, and with a node, root.

Everything is written with mode 0600 into the cluster's state directory and never leaves it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioner.errors import DevClusterError

_VALIDITY = dt.timedelta(days=30)  # a dev cluster lives hours; a short life limits leaks


@dataclass(frozen=True)
class PkiPaths:
    """Where each file lives inside ``<state>/pki``."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.root / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.root / "apiserver.key"

    @property
    def sa_public(self) -> Path:
        return self.root / "sa.pub"

    @property
    def sa_private(self) -> Path:
        return self.root / "sa.key"

    @property
    def etcd_ca_cert(self) -> Path:
        return self.root / "etcd-ca.crt"

    @property
    def etcd_ca_key(self) -> Path:
        return self.root / "etcd-ca.key"

    @property
    def etcd_cert(self) -> Path:
        """etcd's serving certificate, also its peer certificate (one member, on loopback)."""
        return self.root / "etcd.crt"

    @property
    def etcd_key(self) -> Path:
        return self.root / "etcd.key"

    def client_cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def client_key(self, name: str) -> Path:
        return self.root / f"{name}.key"


# Client identities the dev cluster issues: file stem -> (CN = username, O = groups).
CLIENT_IDENTITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("tre-admin", ("system:masters",)),
    "controller-manager": ("system:kube-controller-manager", ()),
}
# The apiserver's client certificate towards etcd (signed by the etcd CA): file stem.
ETCD_CLIENT = "apiserver-etcd-client"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(data)
    path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    usages: list[x509.ObjectIdentifier],
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # Key identifiers: Python >= 3.13 verifies strictly (VERIFY_X509_STRICT) and refuses a
        # certificate without an Authority Key Identifier (the platform's images run 3.13).
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(common_name: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _issue_client(
    paths: PkiPaths,
    stem: str,
    user: str,
    groups: tuple[str, ...],
    ca_name: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
) -> None:
    client_key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(
        _name(user, groups),
        client_key,
        ca_name,
        ca_key,
        ca=False,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    _write(paths.client_key(stem), _key_pem(client_key))
    _write(paths.client_cert(stem), cert.public_bytes(serialization.Encoding.PEM))


def ensure_client_cert(paths: PkiPaths, stem: str, user: str, groups: tuple[str, ...]) -> None:
    """A client certificate signed by the platform's existing CA, made once (the node's
    identities are issued when a node is added to a running platform, after `ensure_pki`)."""
    if paths.client_cert(stem).exists() and paths.client_key(stem).exists():
        return
    ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise DevClusterError(f"{paths.ca_key}: not the EC key ensure_pki writes; 'tre dev down'")
    ca_name = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes()).subject
    _issue_client(paths, stem, user, groups, ca_name, ca_key)


def ensure_pki(paths: PkiPaths, serving_ips: tuple[str, ...] = ()) -> None:
    """Create the CA, serving, client and ServiceAccount keys once, and etcd's CA and
    certificates once; keep existing ones."""
    _ensure_cluster_pki(paths, serving_ips)
    _ensure_etcd_pki(paths)


def _new_ca(common_name: str) -> tuple[x509.Name, ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = _issue(name, key, name, key, ca=True, usages=[])
    return name, key, cert.public_bytes(serialization.Encoding.PEM)


def _issue_serving(
    key_path: Path,
    cert_path: Path,
    subject: x509.Name,
    sans: list[x509.GeneralName],
    ca_name: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    usages: list[x509.ObjectIdentifier],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(subject, key, ca_name, ca_key, ca=False, usages=usages, sans=sans)
    _write(key_path, _key_pem(key))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _ensure_cluster_pki(paths: PkiPaths, serving_ips: tuple[str, ...]) -> None:
    if paths.ca_cert.exists() and paths.sa_private.exists():
        return
    ca_name, ca_key, ca_pem = _new_ca("ucloud-tre-dev-ca")
    _write(paths.ca_key, _key_pem(ca_key))
    _write(paths.ca_cert, ca_pem)

    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        # Where else clients reach it (pods: the kubernetes Service's ClusterIP, the node IP).
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in serving_ips),
    ]
    _issue_serving(
        paths.serving_key,
        paths.serving_cert,
        _name("kube-apiserver"),
        sans,
        ca_name,
        ca_key,
        [ExtendedKeyUsageOID.SERVER_AUTH],
    )

    for stem, (user, groups) in CLIENT_IDENTITIES.items():
        _issue_client(paths, stem, user, groups, ca_name, ca_key)

    # ServiceAccount tokens are signed with RS256 by default: an RSA key.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(paths.sa_private, _key_pem(sa_key))
    _write(
        paths.sa_public,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def _ensure_etcd_pki(paths: PkiPaths) -> None:
    if paths.etcd_ca_cert.exists() and paths.client_cert(ETCD_CLIENT).exists():
        return
    ca_name, ca_key, ca_pem = _new_ca("ucloud-tre-dev-etcd-ca")
    _write(paths.etcd_ca_key, _key_pem(ca_key))
    _write(paths.etcd_ca_cert, ca_pem)
    _issue_serving(
        paths.etcd_key,
        paths.etcd_cert,
        _name("etcd"),
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        ca_name,
        ca_key,
        # The peer listener presents it as a server and dials with it as a client.
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    _issue_client(paths, ETCD_CLIENT, "kube-apiserver", (), ca_name, ca_key)


def write_kubeconfig(path: Path, server: str, pki: PkiPaths, stem: str, user: str) -> None:
    """A kubeconfig (mode 0600) for the client certificate `stem`, trusting the platform CA."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "tre-dev",
                "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki.client_cert(stem)),
                    "client-key": str(pki.client_key(stem)),
                },
            }
        ],
        "contexts": [{"name": "tre-dev", "context": {"cluster": "tre-dev", "user": user}}],
        "current-context": "tre-dev",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
