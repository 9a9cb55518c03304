"""The user's credential for a brokered host, found on the host side as git, gh and npm would."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from omnikernel.sandbox.host_credentials import Credential, find, from_npmrc, parse_broker

pytestmark = pytest.mark.process  # real git credential helpers

TOKEN = "ghp_brokered0123456789abcdef"


def home_with_git_store(tmp_path: Path, line: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".git-credentials").write_text(line + "\n")
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(home / ".config")}
    subprocess.run(["git", "config", "--global", "credential.helper", "store"], env=env, check=True)
    return env


def test_git_credential_fill_finds_what_git_push_would_use(tmp_path):
    env = home_with_git_store(tmp_path, f"https://octocat:{TOKEN}@github.com")
    found = find("github.com", env=env)
    assert found is not None
    assert (found.username, found.secret, found.source) == ("octocat", TOKEN, "git credential fill")
    header = found.authorization()
    assert base64.b64decode(header.removeprefix("Basic ")) == f"octocat:{TOKEN}".encode()
    assert TOKEN not in repr(found)
    # Another host has none, and nothing prompts (the test would hang if it did).
    assert find("gitlab.example", env=env) is None


def test_a_named_environment_variable_wins(tmp_path):
    env = home_with_git_store(tmp_path, f"https://octocat:{TOKEN}@github.com")
    env["MY_GH"] = "from-the-environment-123"
    found = find("github.com", "MY_GH", env=env)
    assert found is not None and found.secret == "from-the-environment-123"
    assert found.source == "$MY_GH"
    # An empty or missing variable falls back to the helper.
    assert find("github.com", "UNSET_VAR", env=env).source == "git credential fill"


def test_the_npmrc_token_is_a_bearer_for_its_registry(tmp_path):
    (tmp_path / ".npmrc").write_text(
        "registry=https://registry.npmjs.org/\n//registry.npmjs.org/:_authToken=npm_abcdef123456\n"
    )
    found = from_npmrc("registry.npmjs.org", tmp_path)
    assert found == Credential("registry.npmjs.org", "", "npm_abcdef123456", "~/.npmrc", "bearer")
    assert found.authorization() == "Bearer npm_abcdef123456"
    assert from_npmrc("npm.pkg.github.com", tmp_path) is None


def test_broker_entries_parse_and_bad_ones_say_what_is_expected():
    assert parse_broker(["github.com", "Registry.npmjs.org=NPM_TOKEN"]) == {
        "github.com": "", "registry.npmjs.org": "NPM_TOKEN"
    }  # fmt: skip
    for bad in ("https://github.com", "github.com:443", ""):
        with pytest.raises(ValueError, match="give a host name"):
            parse_broker([bad])
