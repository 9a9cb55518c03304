"""The per-session certificate authority the egress proxy terminates brokered hosts' TLS with.

For a host the user marks as brokered (``%sandbox broker github.com``) the proxy must read the
agent's requests, to add the user's credential on the way out and to show a ``git push`` to the
policy. So it answers the sandbox's TLS itself, with a leaf certificate for that host signed by
this CA, which the sandbox trusts through a CA bundle (the system bundle plus this CA) mounted
over the system one and named by ``SSL_CERT_FILE`` and its kin (`trust_env`).

What bounds the CA:

- it is made when the agent starts and lives in the kernel's memory; its key is never written
  where the sandbox can read (a leaf's key touches a private temporary file for the moment
  Python's ``ssl`` needs to load it, and is deleted at once);
- it is good for one day, and its *name constraints* (RFC 5280) allow only the brokered host
  names: a certificate it signs for any other name fails verification in every client that
  honours constraints (OpenSSL, Go, Node, browsers), so even a stolen key does not intercept
  other hosts;
- only the sandbox's bundle holds it: nothing on the host trusts it.

The `cryptography` package makes the keys and certificates (the maintained binding to OpenSSL's
primitives); nothing cryptographic is written here.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import secrets
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: How long the CA and its leaves are valid (the agent's process lives far shorter, usually).
LIFETIME = datetime.timedelta(days=1)

#: Environment variables through which the sandbox's tools find the CA bundle.
TRUST_VARIABLES = (
    "SSL_CERT_FILE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "CURL_CA_BUNDLE",
)


def system_bundle() -> Path | None:
    """The system's CA bundle file (Debian: /etc/ssl/certs/ca-certificates.crt)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and os.path.isfile(candidate):
            return Path(os.path.realpath(candidate))
    return None


@dataclasses.dataclass
class SessionCA:
    """A CA whose certificates may name only `hosts` (see the module docstring)."""

    hosts: tuple[str, ...]
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    _contexts: dict[str, ssl.SSLContext] = dataclasses.field(default_factory=dict)

    @classmethod
    def create(cls, hosts: tuple[str, ...], label: str = "") -> SessionCA:
        hosts = tuple(dict.fromkeys(h.lower().rstrip(".") for h in hosts))
        if not hosts:
            raise ValueError("a session CA needs at least one brokered host")
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Omnigent kernel"),
                x509.NameAttribute(
                    NameOID.COMMON_NAME,
                    f"Omnigent session CA {label or secrets.token_hex(4)}"[:64],
                ),
            ]
        )
        now = datetime.datetime.now(datetime.UTC)
        permitted = [x509.DNSName(h.removeprefix("*.")) for h in hosts]
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
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
            .add_extension(
                x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(hosts, key, cert)

    def covers(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in self.hosts)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def leaf(self, host: str) -> x509.Certificate:
        """A fresh server certificate for `host` (one of the brokered names), and its key."""
        return self._leaf(host)[0]

    def _leaf(self, host: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        host = host.lower().rstrip(".")
        if not self.covers(host):
            raise ValueError(f"{host} is not brokered, so the session CA signs nothing for it")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            alt = x509.DNSName(host)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert, key

    def server_context(self, host: str) -> ssl.SSLContext:
        """The TLS server context the proxy answers the sandbox with for `host` (cached)."""
        host = host.lower().rstrip(".")
        if (found := self._contexts.get(host)) is not None:
            return found
        cert, key = self._leaf(host)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])  # the proxy reads HTTP/1.1 only
        # ssl loads a key from a file only: a private dir, deleted as soon as it is loaded.
        with tempfile.TemporaryDirectory(prefix="omnikernel-leaf-") as private:
            path = Path(private) / "leaf.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
                f.write(cert.public_bytes(serialization.Encoding.PEM))
                f.write(self.cert_pem())
            context.load_cert_chain(path)
        self._contexts[host] = context
        return context

    def write_bundle(self, path: Path) -> Path:
        """The sandbox's CA bundle at `path`: the system bundle, then this CA (no key)."""
        system = system_bundle()
        body = system.read_bytes() if system is not None else b""
        if body and not body.endswith(b"\n"):
            body += b"\n"
        path.write_bytes(body + b"# Omnigent session CA (brokered hosts only)\n" + self.cert_pem())
        path.chmod(0o444)
        return path


def trust_env(bundle: Path) -> dict[str, str]:
    """What the sandbox's environment gets so its tools trust `bundle`."""
    return dict.fromkeys(TRUST_VARIABLES, str(bundle))
