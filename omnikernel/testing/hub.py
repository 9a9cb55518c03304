"""A real local JupyterHub: three users, one group, one single-user server per user.

JupyterHub from PyPI (the ``hub`` extra) and configurable-http-proxy from npm (pinned in the
Makefile), a local process spawner (every user's server runs as this Unix user, each with its
own home folder and session store) and the dummy authenticator (password `PASSWORD` for all).
The tests start it on free loopback ports (`LocalHub` as a context manager); ``make hub``
(``python -m omnikernel.testing.hub``) starts the same hub for a person to try.

Its configuration is the one a deployment needs for sharing by name (docs/hub.md):

- the ``user`` and ``server`` roles may create JupyterHub shares of the user's own server
  (``shares!user``) and look up the names they share with (``read:users:name``,
  ``read:groups:name``): ``%share with bob`` shares alice's server with bob through the hub API,
  with the server's own token;
- every single-user server runs with omnikernel's Authorizer
  (``jupyter_ext.hub.authorizer.SharedSessionAuthorizer``): a visitor a share lets in reaches
  the share page and nothing else (no files, kernels, terminals).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

USERS = ("alice", "bob", "carol")
GROUPS = {"data-team": ["bob"]}
PASSWORD = "omnikernel"
#: The hub, its proxy and one user's server (jupyterlab) start in about 30 s on an idle machine.
START_TIMEOUT_S = 180.0

CONFIG = """\
import json, os
settings = json.loads({settings!r})
c = get_config()  # noqa: F821
c.JupyterHub.bind_url = settings["bind_url"]
c.JupyterHub.hub_bind_url = settings["hub_bind_url"]
c.ConfigurableHTTPProxy.api_url = settings["proxy_api_url"]
c.ConfigurableHTTPProxy.pid_file = settings["proxy_pid_file"]
c.ConfigurableHTTPProxy.command = [settings["proxy_command"]]
c.JupyterHub.db_url = "sqlite:///" + settings["workdir"] + "/hub.sqlite"
c.JupyterHub.cookie_secret_file = settings["workdir"] + "/cookie_secret"
c.JupyterHub.pid_file = settings["workdir"] + "/hub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = settings["password"]
c.Authenticator.allowed_users = set(settings["users"])
c.JupyterHub.load_groups = {{g: {{"users": u}} for g, u in settings["groups"].items()}}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = settings["workdir"] + "/home/{{username}}"
c.Spawner.cmd = [settings["python"], "-m", "jupyterhub.singleuser"]
c.Spawner.args = settings["server_args"]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
env = dict(settings["environment"])
env["OMNIKERNEL_STORE"] = lambda spawner: (
    settings["workdir"] + "/home/" + spawner.user.name + "/.omnikernel/sessions.sqlite3"
)
env["OMNIKERNEL_STATE_DIR"] = lambda spawner: (
    settings["workdir"] + "/home/" + spawner.user.name + "/.omnikernel/state"
)
c.Spawner.environment = env
sharing = ["shares!user", "read:users:name", "read:groups:name"]
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", *sharing]}},
    {{"name": "server", "scopes": ["users:activity!user", "access:servers!server", *sharing]}},
    {{"name": "omnikernel-tests", "services": ["omnikernel-tests"],
      "scopes": ["admin:users", "admin:servers", "tokens", "access:servers", "list:users",
                 "read:users", "shares", "read:groups"]}},
]
c.JupyterHub.services = [{{"name": "omnikernel-tests", "api_token": settings["service_token"]}}]
c.JupyterHub.log_level = "INFO"
"""

#: What each single-user server is started with (besides JupyterHub's own environment).
SERVER_ARGS = [
    "--ServerApp.authorizer_class=jupyter_ext.hub.authorizer.SharedSessionAuthorizer",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proxy_command() -> str:
    """configurable-http-proxy from the Makefile's .tools (or PATH); a clear error without it."""
    repo_tools = Path(__file__).resolve().parents[2] / ".tools" / "node_modules" / ".bin"
    found = shutil.which(
        "configurable-http-proxy", path=f"{repo_tools}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if not found:
        raise RuntimeError(
            "configurable-http-proxy is not installed: run `make harness-clis` (npm), "
            "or `npm install -g configurable-http-proxy`"
        )
    return found


class HubError(RuntimeError):
    """The hub did not start, or answered an API call with an error."""


class LocalHub:
    """JupyterHub on free loopback ports in `workdir`; `start`/`stop`, or ``with LocalHub(..)``.

    `url` is the public side (the proxy): a browser signs in at ``{url}/hub/login``."""

    def __init__(
        self,
        workdir: Path,
        environment: dict[str, str] | None = None,
        port: int = 0,
        server_args: list[str] | None = None,
    ):
        self.workdir = Path(workdir).resolve()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service_token = secrets.token_hex(32)
        self.environment = dict(environment or {})
        self.server_args = list(SERVER_ARGS if server_args is None else server_args)
        if os.getuid() == 0:
            self.server_args.append("--allow-root")
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "hub.log"

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> LocalHub:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for user in USERS:
            (self.workdir / "home" / user).mkdir(parents=True, exist_ok=True)
        settings = {
            "bind_url": self.url,
            "hub_bind_url": f"http://127.0.0.1:{free_port()}",
            "proxy_api_url": f"http://127.0.0.1:{free_port()}",
            "proxy_pid_file": str(self.workdir / "proxy.pid"),
            "proxy_command": proxy_command(),
            "workdir": str(self.workdir),
            "password": PASSWORD,
            "users": list(USERS),
            "groups": GROUPS,
            "python": sys.executable,
            "server_args": self.server_args,
            "environment": self.environment,
            "service_token": self.service_token,
        }
        config = self.workdir / "jupyterhub_config.py"
        config.write_text(CONFIG.format(settings=json.dumps(settings)))
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(config)],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HubError(f"jupyterhub exited ({self.process.returncode}): {self.log_tail()}")
            try:
                self.api("GET", "/hub/api/")
                return self
            except (OSError, HubError):
                time.sleep(0.3)
        self.stop()
        raise HubError(f"jupyterhub did not answer in {START_TIMEOUT_S:.0f} s: {self.log_tail()}")

    def stop(self) -> None:
        """Stop the hub (which stops the users' servers) and its proxy."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        pid_file = self.workdir / "proxy.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass
            pid_file.unlink(missing_ok=True)
        self.process = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- the REST API ---------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """Call the hub's REST API through the proxy (the service token unless `token`)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"token {token or self.service_token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            raise HubError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None
        return json.loads(text) if text else None

    def start_server(self, user: str, timeout_s: float = START_TIMEOUT_S) -> str:
        """Start `user`'s single-user server and wait until it is ready; its URL."""
        try:
            self.api("POST", f"/hub/api/users/{user}/server")
        except HubError as exc:
            if "400" not in str(exc):  # 400: already running
                raise
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            model = self.api("GET", f"/hub/api/users/{user}")
            server = model.get("servers", {}).get("")
            if server and server.get("ready"):
                return f"{self.url}/user/{user}/"
            time.sleep(0.5)
        raise HubError(f"{user}'s server was not ready in {timeout_s:.0f} s: {self.log_tail()}")

    def token_of(self, user: str, scopes: list[str] | None = None) -> str:
        """A fresh API token of `user` (all their permissions unless `scopes`)."""
        body: dict[str, Any] = {"note": "omnikernel tests", "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = scopes
        return str(self.api("POST", f"/hub/api/users/{user}/tokens", body)["token"])


def main(argv: list[str] | None = None) -> None:
    """``make hub``: the local hub for a person, until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m omnikernel.testing.hub", description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workdir", default=".hub", help="the hub's database, logs and homes")
    args = parser.parse_args(argv)
    hub = LocalHub(Path(args.workdir), port=args.port)
    hub.start()
    print(
        f"JupyterHub at {hub.url}/hub/login: users {', '.join(USERS)} (password "
        f"{PASSWORD!r}), group data-team = bob. Log: {hub.log_path}. Ctrl-C stops it.",
        flush=True,
    )
    try:
        assert hub.process is not None
        hub.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()


if __name__ == "__main__":
    main()
