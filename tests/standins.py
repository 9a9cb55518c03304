"""Local stand-ins for package registries, over TLS, under their real host names.

A test CA (trustme) signs one certificate for the names a stand-in serves; the kernel's
``egress_resolve`` points those names at the stand-in's port on 127.0.0.1, so the agent's pip
or npm asks for ``pypi.org`` as it would on the internet. The client inside the sandbox trusts
the test CA because the scripted command says so (``pip --cert``, ``npm --cafile``): the product
trusts nothing new. Every request is kept (`requests`) so a test can tell what was fetched.

- `PyPIStandIn`: a PEP 503 simple index on ``pypi.org`` and its files on
  ``files.pythonhosted.org``, serving one wheel the test builds.
- `NpmStandIn`: ``registry.npmjs.org``'s package document and tarball for one package.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import ssl
import tarfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import trustme


class TLSStandIn:
    """An HTTPS server on 127.0.0.1 (a free port) with a certificate for `names` from `ca`;
    `files` maps a (host, path) to (content type, body)."""

    def __init__(self, ca: trustme.CA, names: tuple[str, ...]):
        self.names = names
        self.files: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host = (self.headers.get("Host") or "").rpartition(":")[0] or self.headers.get(
                    "Host", ""
                )
                stand_in.requests.append((host, self.path))
                found = stand_in.files.get((host, self.path.split("?")[0]))
                if found is None:
                    self.send_error(404)
                    return
                kind, body = found
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                # TLS per connection, on its own thread: a client that connects and says
                # nothing holds up only itself, as on a real server.
                request.settimeout(30)
                try:
                    tls = context.wrap_socket(request, server_side=True)
                except (OSError, ssl.SSLError):
                    return
                Handler(tls, client_address, self)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def resolve(self) -> str:
        """This stand-in's ``OMNIKERNEL_EGRESS_RESOLVE`` entries."""
        return ",".join(f"{name}:443=127.0.0.1:{self.port}" for name in self.names)

    def __enter__(self) -> TLSStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def wheel(name: str, version: str, module_text: str) -> tuple[str, bytes]:
    """A pure-Python wheel of one module package `name` (file name, bytes)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": module_text.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: standins\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return f"{name}-{version}-py3-none-any.whl", out.getvalue()


class PyPIStandIn(TLSStandIn):
    """``pypi.org/simple/NAME/`` linking a wheel on ``files.pythonhosted.org``."""

    def __init__(self, ca: trustme.CA, name: str = "tinydb", version: str = "4.8.0"):
        super().__init__(ca, ("pypi.org", "files.pythonhosted.org"))
        filename, data = wheel(name, version, f'STANDIN = "{name} {version} from the stand-in"\n')
        digest = hashlib.sha256(data).hexdigest()
        path = f"/packages/aa/bb/{filename}"
        page = (
            f"<!DOCTYPE html><html><body><a href='https://files.pythonhosted.org{path}"
            f"#sha256={digest}'>{filename}</a></body></html>"
        ).encode()
        self.files[("pypi.org", f"/simple/{name}/")] = ("text/html", page)
        self.files[("files.pythonhosted.org", path)] = ("application/octet-stream", data)


class NpmStandIn(TLSStandIn):
    """``registry.npmjs.org``'s document and tarball of one package."""

    def __init__(self, ca: trustme.CA, name: str = "left-pad-standin", version: str = "1.0.0"):
        super().__init__(ca, ("registry.npmjs.org",))
        manifest = {"name": name, "version": version, "main": "index.js"}
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            for path, text in (
                ("package/package.json", json.dumps(manifest)),
                ("package/index.js", f"module.exports = '{name} {version} from the stand-in';\n"),
            ):
                data = text.encode()
                info = tarfile.TarInfo(path)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        tarball = out.getvalue()
        url = f"https://registry.npmjs.org/{name}/-/{name}-{version}.tgz"
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
        document = {
            "name": name,
            "dist-tags": {"latest": version},
            "versions": {
                version: {
                    **manifest,
                    "dist": {
                        "tarball": url,
                        "shasum": hashlib.sha1(tarball).hexdigest(),
                        "integrity": integrity,
                    },
                }
            },
        }
        self.files[("registry.npmjs.org", f"/{name}")] = (
            "application/json",
            json.dumps(document).encode(),
        )
        self.files[("registry.npmjs.org", f"/{name}/-/{name}-{version}.tgz")] = (
            "application/octet-stream",
            tarball,
        )


def write_ca(ca: trustme.CA, path: Path) -> Path:
    ca.cert_pem.write_to_path(str(path))
    return path
