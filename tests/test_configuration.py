"""Settings in one place: every setting is a trait with help text, its environment variable is
read by the trait's default, and docs/configuration.md (generated from the traits) lists them."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from omnikernel.kernel.settings import (
    HANDOFFS,
    KernelSettings,
    SessionFiles,
    SettingError,
    parse_bool,
)

from .conftest import REPO

PAGE = REPO / "docs" / "configuration.md"
#: The kernel runs this checkout's package (a worktree may share another's venv), prewarm off.
THIS_CHECKOUT = {"PYTHONPATH": str(REPO), "OMNIKERNEL_PREWARM": "0"}


def generator():
    spec = importlib.util.spec_from_file_location(
        "gen_configuration", PAGE.with_name("gen_configuration.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_page_is_the_generators_output():
    gen = generator()
    assert PAGE.read_text(encoding="utf-8") == gen.render(), (
        f"docs/configuration.md is stale: regenerate it with `{gen.COMMAND}`"
    )


def test_every_variable_the_package_names_is_on_the_page():
    named = set()
    for folder in ("omnikernel", "jupyter_ext"):
        for path in (REPO / folder).rglob("*.py"):
            named |= set(re.findall(r"OMNIKERNEL_[A-Z_]*[A-Z]", path.read_text(encoding="utf-8")))
    assert len(named) >= 18
    page = PAGE.read_text(encoding="utf-8")
    assert sorted(v for v in named if f"`{v}`" not in page) == []


def test_every_setting_has_help_and_every_variable_one_setting():
    traits = KernelSettings.class_own_traits(config=True)
    assert all(t.help.strip() for t in traits.values())
    variables = [t.metadata["env"] for t in traits.values() if t.metadata.get("env")]
    handoffs = [h.variable for h in HANDOFFS]
    assert len(set(variables + handoffs)) == len(variables + handoffs)


@pytest.mark.parametrize(
    ("env", "name", "expected"),
    [
        ({"OMNIKERNEL_AUTO_APPROVE": "1"}, "auto_approve", True),
        ({"OMNIKERNEL_AUTO_APPROVE": "Off"}, "auto_approve", False),
        ({}, "auto_approve", False),
        ({"OMNIKERNEL_APPROVAL_TIMEOUT": "5"}, "approval_timeout", 5.0),
        ({"OMNIKERNEL_APPROVAL_TIMEOUT": ""}, "approval_timeout", 600.0),
        ({"OMNIKERNEL_WATCHDOG_S": "0"}, "watchdog_s", 0.0),
        ({"OMNIKERNEL_PREWARM": "0"}, "prewarm", False),
        ({"OMNIKERNEL_HARNESS": "codex"}, "default_harness", "codex"),
        ({"OMNIKERNEL_CREDENTIALS": "claude=login"}, "credentials", {"claude": "login"}),
        ({"OMNIKERNEL_STORE": "/s/x.sqlite3"}, "state_dir", "/s/harness-state"),
    ],
)
def test_a_variable_sets_its_trait(monkeypatch, env, name, expected):
    for variable in [t.metadata.get("env") for t in KernelSettings.class_traits().values()]:
        if variable:
            monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    settings = KernelSettings()
    assert getattr(settings, name) == expected
    assert settings.env_problems() == []


def test_the_command_line_and_server_find_the_store_from_the_environment(monkeypatch, tmp_path):
    from traitlets.config import Config

    monkeypatch.setenv("OMNIKERNEL_STORE", str(tmp_path / "s.sqlite3"))
    monkeypatch.delenv("OMNIKERNEL_STATE_DIR", raising=False)
    files = SessionFiles()
    assert (files.store, files.state_dir) == (
        str(tmp_path / "s.sqlite3"),
        str(tmp_path / "harness-state"),
    )
    config = Config()
    config.SessionFiles.store = "/elsewhere.sqlite3"
    assert SessionFiles(config=config).store == "/elsewhere.sqlite3"


def test_no_layer_below_the_settings_reads_an_omnikernel_variable():
    """The kernel, the command line and the server extension read them (`settings`) and pass
    values down; a lower layer only names them (in messages, or as a child's variable). The one
    exception: `identity` resolves the handoffs in the environment the kernel passes it."""
    reads = re.compile(r"(environ|getenv)\b[^\n]*OMNIKERNEL_|(env|environ)\.get\(\s*\w*_ENV\b")
    found = []
    for path in (REPO / "omnikernel").rglob("*.py"):
        if path.parent.name in ("kernel", "cli", "magics") or path.name == "identity.py":
            continue
        text = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in reads.finditer(text)]
    assert found == []


def test_a_config_value_wins_over_the_variable(monkeypatch):
    from traitlets.config import Config

    monkeypatch.setenv("OMNIKERNEL_APPROVAL_TIMEOUT", "5")
    config = Config()
    config.KernelSettings.approval_timeout = 30.0
    assert KernelSettings(config=config).approval_timeout == 30.0


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("OMNIKERNEL_APPROVAL_TIMEOUT", "soon", "not a number of seconds: it takes more than 0"),
        ("OMNIKERNEL_APPROVAL_TIMEOUT", "0", "not a number of seconds: it takes more than 0"),
        ("OMNIKERNEL_WATCHDOG_S", "-1", "it takes 0 or more (0: off)"),
        ("OMNIKERNEL_PREWARM", "maybe", "not a yes or no: it takes 1, true, yes, on or 0"),
    ],
)
def test_a_bad_variable_is_named_and_the_default_kept(monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    settings = KernelSettings()
    [problem] = settings.env_problems()
    assert problem.startswith(f"{variable}={value!r} is ") and says in problem
    name = next(n for n, t in settings.traits().items() if t.metadata.get("env") == variable)
    assert getattr(settings, name) == settings.traits()[name].default_value


def test_parse_bool_names_the_variable():
    with pytest.raises(SettingError, match="OMNIKERNEL_X='2' is not a yes or no"):
        parse_bool("OMNIKERNEL_X", "2")


def test_a_real_kernel_takes_its_settings_from_the_environment(workdir, start_kernel):
    kernel = start_kernel(workdir, OMNIKERNEL_APPROVAL_TIMEOUT="42", **THIS_CHECKOUT)
    result = kernel.execute(
        "%%python\nimport json\nk = get_ipython().kernel\n"
        "print(json.dumps([k.approval_timeout, k.agents.approvals.timeout_s, k.prewarm]))"
    )
    assert result.status == "ok", result.text
    assert json.loads(result.text.strip().splitlines()[-1]) == [42.0, 42.0, False]


def test_a_real_kernel_says_what_is_wrong_with_a_variable(workdir, start_kernel):
    kernel = start_kernel(workdir, OMNIKERNEL_APPROVAL_TIMEOUT="soon", **THIS_CHECKOUT)
    result = kernel.execute(
        "%%python\nk = get_ipython().kernel\n"
        "print(k.agents.approvals.timeout_s, k.agents.first_notice)"
    )
    assert result.status == "ok", result.text
    assert "600.0 OMNIKERNEL_APPROVAL_TIMEOUT='soon' is not a number of seconds" in result.text
