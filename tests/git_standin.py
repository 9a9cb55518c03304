"""A stand-in for a git host: ``git http-backend`` behind a small HTTPS server with basic auth.

It serves bare repositories under `root` at ``https://NAME/owner/repo.git`` (NAME is the host
name its certificate carries, e.g. github.com; tests point that name at 127.0.0.1 with
``egress_resolve``). Pushes need ``Authorization: Basic`` with the one user and token it
knows; fetches too (a private repository). Every Authorization header it saw is kept in
`seen_auth`, so a test can tell the broker added the credential. ``/echo-headers`` answers
with the request's headers, as some hosts' debugging endpoints do (the reflection attack).
"""

from __future__ import annotations

import base64
import datetime
import os
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Agent", "GIT_AUTHOR_EMAIL": "agent@example.com",
    "GIT_COMMITTER_NAME": "Agent", "GIT_COMMITTER_EMAIL": "agent@example.com",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
}  # fmt: skip


def make_ca_and_leaf(name: str, folder: Path) -> tuple[Path, Path]:
    """A test CA (its certificate at the first path) and a leaf for `name` (cert + key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_path, leaf_path = folder / f"{name}-ca.pem", folder / f"{name}-leaf.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + leaf.public_bytes(serialization.Encoding.PEM)
    )
    return ca_path, leaf_path


class GitStandIn:
    def __init__(self, root: Path, name: str, user: str, token: str):
        self.root, self.name, self.user, self.token = root, name, user, token
        self.seen_auth: list[str] = []
        self.ca_path, leaf = make_ca_and_leaf(name, root.parent)
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _serve(self) -> None:
                body = self._body() if self.command == "POST" else b""
                auth = self.headers.get("Authorization", "")
                stand_in.seen_auth.append(auth)
                wanted = (
                    "Basic "
                    + base64.b64encode(f"{stand_in.user}:{stand_in.token}".encode()).decode()
                )
                if self.path.startswith("/echo-headers"):  # a host that reflects requests
                    echoed = str(self.headers).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(echoed)))
                    self.end_headers()
                    self.wfile.write(echoed)
                    return
                if auth != wanted:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="stand-in"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                url = urlsplit(self.path)
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(stand_in.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": url.path,
                    "QUERY_STRING": url.query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": stand_in.user,
                    "REMOTE_ADDR": "127.0.0.1",
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                }
                done = subprocess.run(
                    ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
                )
                head, _, out = done.stdout.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.decode("latin-1").split("\r\n"):
                    key, _, value = line.partition(":")
                    if key.lower() == "status":
                        status = int(value.split()[0])
                    elif key:
                        headers.append((key, value.strip()))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(leaf)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> GitStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bare(self, path: str) -> Path:
        """A new bare repository at owner/repo.git with `main` holding one commit."""
        repo = self.root / path
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], check=True)
        # As GitHub does: clones may leave trees and blobs out (the broker asks for commits).
        subprocess.run(
            ["git", "-C", str(repo), "config", "uploadpack.allowFilter", "true"], check=True
        )
        seed = self.root.parent / f"seed-{repo.name}"
        env = {**os.environ, **GIT_ENV}
        subprocess.run(["git", "init", "-q", "-b", "main", str(seed)], check=True, env=env)
        (seed / "README.md").write_text("seed\n")
        for args in (
            ["add", "."],
            ["commit", "-q", "-m", "seed"],
            ["push", "-q", str(repo), "main"],
        ):
            subprocess.run(["git", "-C", str(seed), *args], check=True, env=env)
        return repo

    def ref(self, path: str, ref: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.root / path), "rev-parse", "--verify", "-q", ref],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return done.stdout.strip()
