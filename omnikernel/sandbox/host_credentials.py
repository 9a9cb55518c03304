"""The user's own credential for a brokered host, found on the host side, never in the sandbox.

The egress proxy adds it to the requests it forwards to a brokered host (see `broker`). Where it
comes from, first found wins:

1. the environment variable the user named for that host (``github.com=GH_TOKEN`` in
   ``c.OmniKernel.sandbox_broker``), read from the kernel's environment;
2. the host's git credential helper: ``git credential fill`` (what ``git push`` itself would
   use: a store, the libsecret keyring, ``gh auth git-credential``, a manager);
3. ``gh auth token --hostname HOST`` (the GitHub CLI's login);
4. the ``//HOST/:_authToken=`` line of ``~/.npmrc``.

Each lookup runs with prompts off (``GIT_TERMINAL_PROMPT=0``) and a timeout: the kernel never
waits on a terminal nobody sees. A credential found is given to the session's redactor by the
proxy's owner before it is used (see `omnikernel.store.redact`).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

#: Seconds a helper may take (a keyring may need to unlock).
TIMEOUT_S = 15.0


@dataclasses.dataclass(frozen=True)
class Credential:
    host: str
    username: str
    secret: str
    #: Where it came from ("git credential fill", "gh auth token", "~/.npmrc", "$GH_TOKEN").
    source: str
    #: "basic" (git's smart HTTP) or "bearer" (a registry token).
    scheme: str = "basic"

    def authorization(self) -> str:
        """The ``Authorization`` header value."""
        if self.scheme == "bearer":
            return f"Bearer {self.secret}"
        pair = f"{self.username}:{self.secret}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def __repr__(self) -> str:  # never the secret, whatever prints it
        return f"Credential(host={self.host!r}, username={self.username!r}, source={self.source!r})"


def parse_broker(entries: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``c.OmniKernel.sandbox_broker`` entries (``host`` or ``host=ENV_VAR``): host -> variable
    ("" where none is named). Raises ValueError with what is expected."""
    found: dict[str, str] = {}
    for entry in entries:
        host, _, variable = str(entry).strip().partition("=")
        host = host.strip().lower().rstrip(".")
        if not host or "/" in host or ":" in host or " " in host:
            raise ValueError(
                f"cannot broker {entry!r}: give a host name (github.com), optionally with the "
                "environment variable holding its token (github.com=GH_TOKEN)"
            )
        found[host] = variable.strip()
    return found


def find(
    host: str,
    variable: str = "",
    *,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Credential | None:
    """The user's credential for `host` (see the module docstring), or None."""
    env = dict(os.environ if env is None else env)
    home = home or Path(env.get("HOME") or os.path.expanduser("~"))
    if variable:
        value = env.get(variable, "")
        if value:
            return Credential(host, "x-access-token", value, f"${variable}", _scheme_for(host))
    return from_git(host, env) or from_gh(host, env) or from_npmrc(host, home)


def _scheme_for(host: str) -> str:
    return "bearer" if "registry" in host or host.startswith("npm.") else "basic"


def _quiet(env: dict[str, str]) -> dict[str, str]:
    return {
        **env,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GCM_INTERACTIVE": "never",
    }


def from_git(host: str, env: dict[str, str]) -> Credential | None:
    git = shutil.which("git", path=env.get("PATH"))
    if git is None:
        return None
    try:
        done = subprocess.run(
            [git, "credential", "fill"],
            input=f"protocol=https\nhost={host}\n\n",
            capture_output=True,
            text=True,
            env=_quiet(env),
            timeout=TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    fields = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    password = fields.get("password", "")
    if not password:
        return None
    return Credential(host, fields.get("username", ""), password, "git credential fill")


def from_gh(host: str, env: dict[str, str]) -> Credential | None:
    gh = shutil.which("gh", path=env.get("PATH"))
    if gh is None:
        return None
    try:
        done = subprocess.run(
            [gh, "auth", "token", "--hostname", host],
            capture_output=True,
            text=True,
            env={**env, "GH_PROMPT_DISABLED": "1"},
            timeout=TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    token = done.stdout.strip()
    if done.returncode != 0 or not token:
        return None
    return Credential(host, "x-access-token", token, "gh auth token")


def from_npmrc(host: str, home: Path) -> Credential | None:
    try:
        text = (home / ".npmrc").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.strip().partition("=")
        key = key.strip()
        if key.startswith(f"//{host}/") and key.endswith(":_authToken") and value.strip():
            return Credential(host, "", value.strip().strip('"'), "~/.npmrc", "bearer")
    return None
