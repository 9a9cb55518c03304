"""The per-session CA: leaves for brokered hosts verify, and nothing else can."""

from __future__ import annotations

import asyncio
import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from omnikernel.sandbox.session_ca import SessionCA, system_bundle, trust_env


def verify(ca: SessionCA, leaf: x509.Certificate, host: str) -> None:
    verifier = PolicyBuilder().store(Store([ca.cert])).build_server_verifier(x509.DNSName(host))
    verifier.verify(leaf, [])


def test_a_leaf_for_a_brokered_host_verifies_under_the_session_ca():
    ca = SessionCA.create(("github.com", "registry.npmjs.org"))
    verify(ca, ca.leaf("github.com"), "github.com")
    verify(ca, ca.leaf("GitHub.com."), "github.com")


def test_the_ca_signs_nothing_for_a_host_that_is_not_brokered():
    ca = SessionCA.create(("github.com",))
    with pytest.raises(ValueError, match="not brokered"):
        ca.leaf("pypi.org")


def test_a_leaf_forged_with_the_ca_key_for_another_host_fails_on_its_name_constraints():
    """Even with the CA's key (the attack: a leaked key), a certificate for another host does
    not verify: the CA is constrained to the brokered names."""
    ca = SessionCA.create(("github.com",))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pypi.org")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("pypi.org")]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
        .sign(ca.key, hashes.SHA256())
    )
    with pytest.raises(VerificationError):
        verify(ca, forged, "pypi.org")
    # Without the constraint (the same forgery under an unconstrained CA) it would verify:
    # the constraint is what refuses it.
    loose = (
        x509.CertificateBuilder()
        .subject_name(ca.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(ca.key.public_key())
        .serial_number(ca.cert.serial_number)
        .not_valid_before(ca.cert.not_valid_before_utc)
        .not_valid_after(ca.cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key()), False)
        .sign(ca.key, hashes.SHA256())
    )
    PolicyBuilder().store(Store([loose])).build_server_verifier(x509.DNSName("pypi.org")).verify(
        forged, []
    )


def test_each_session_has_its_own_ca():
    one, two = SessionCA.create(("github.com",)), SessionCA.create(("github.com",))
    with pytest.raises(VerificationError):
        verify(one, two.leaf("github.com"), "github.com")


def test_the_bundle_holds_the_system_roots_and_the_ca_but_no_key(tmp_path):
    ca = SessionCA.create(("github.com",))
    bundle = ca.write_bundle(tmp_path / "bundle.pem")
    text = bundle.read_text()
    assert ca.cert_pem().decode() in text
    assert "PRIVATE KEY" not in text
    system = system_bundle()
    assert system is not None, "no system CA bundle: apt-get install -y ca-certificates"
    assert text.startswith(system.read_text()[:200])
    assert set(trust_env(bundle)) >= {
        "SSL_CERT_FILE", "GIT_SSL_CAINFO", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "PIP_CERT"
    }  # fmt: skip


def test_a_client_trusting_the_bundle_completes_tls_with_the_proxys_context(tmp_path):
    ca = SessionCA.create(("github.com",))
    bundle = ca.write_bundle(tmp_path / "bundle.pem")

    async def main() -> bytes:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"hello " + await reader.readexactly(5))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(
            serve, "127.0.0.1", 0, ssl=ca.server_context("github.com")
        )
        port = server.sockets[0].getsockname()[1]
        client = ssl.create_default_context(cafile=str(bundle))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="github.com"
        )
        writer.write(b"agent")
        got = await reader.read()
        writer.close()
        # A client that does not trust the session CA refuses the same server.
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=ssl.create_default_context(), server_hostname="github.com"
            )
        server.close()
        return got

    assert asyncio.run(main()) == b"hello agent"
