"""Host patterns, presets and the network ask in the policy engine: a connection no rule names
asks a person (never auto-approved), ``allow-host`` / ``deny-host`` decide, a person's "this
session" or "always" covers the host from then on."""

from __future__ import annotations

import pytest

from omnikernel.approvals.decide import decide
from omnikernel.events import Event, EventKind
from omnikernel.policy import NETWORK_ASK, Outcome, Policy, PolicyState, judge, observe, request_of
from omnikernel.policy.hosts import (
    PRESETS,
    HostPatternError,
    allowed,
    check,
    expand,
    matches,
    presets_of,
)
from omnikernel.policy.rule import RuleError
from omnikernel.policy.rules import make_rule


def network(host: str, port: int = 443, **extra) -> dict:
    return {
        "request_id": "net-1",
        "action": "network",
        "tool": "pip",
        "summary": f"pip wants to reach {host}:{port} (`pip install tinydb`)",
        "input": {"host": host, "port": port, "command": "pip install tinydb"},
        **extra,
    }


@pytest.mark.parametrize(
    ("pattern", "host", "port", "ok"),
    [
        ("@pypi", "pypi.org", 443, True),
        ("@pypi", "files.pythonhosted.org", 443, True),
        ("@PyPI", "pypi.org", 443, True),
        ("@pypi", "pypi.org", 22, False),
        ("@pypi", "evilpypi.org", 443, False),
        ("@npm", "registry.npmjs.org", 443, True),
        ("@github", "github.com", 443, True),
        ("*.github.com", "github.com", 443, False),
        ("*.github.com", "api.github.com", 443, True),
        ("*.github.com", "api.github.com.evil.org", 443, False),
        ("github.com:22", "github.com", 22, True),
        ("github.com:22", "github.com", 443, False),
    ],
)
def test_patterns_and_presets(pattern, host, port, ok):
    assert matches(pattern, host, port) is ok


def test_every_preset_lists_real_looking_hosts_and_expands_in_order():
    for name, hosts in PRESETS.items():
        assert name.startswith("@") and hosts
        for host in hosts:
            assert check(host) == host
    assert expand(["@pypi", "pypi.org", "example.com:8080"]) == (
        "pypi.org",
        "files.pythonhosted.org",
        "example.com:8080",
    )
    assert presets_of("files.pythonhosted.org") == ["@pypi"]
    assert allowed(("@npm",), "registry.npmjs.org", 443)


@pytest.mark.parametrize("bad", ["@nosuch", "a/b", "", "*.", "x:99999", "ev*l.com", ":443", "a:b"])
def test_a_bad_pattern_says_what_it_takes_and_matches_nothing(bad):
    with pytest.raises(HostPatternError, match="preset"):
        expand([bad])
    assert not allowed((bad,), "a", 443)


def test_a_host_no_rule_names_asks_and_auto_approval_never_answers_it():
    request = request_of(network("pypi.org"))
    assert (request.kind, request.host, request.port) == ("network", "pypi.org", 443)
    verdict = judge([], PolicyState(), request)
    assert verdict.outcome == Outcome.ASK and verdict.rules == (NETWORK_ASK,)
    assert not verdict.is_default_ask
    assert "pip wants to reach pypi.org:443" in verdict.reason
    decision = decide(
        Event(EventKind.APPROVAL_REQUEST, network("pypi.org")), verdict, auto_approve=True
    )
    assert decision.needs_person and decision.subject == "pypi.org"


def test_allow_host_and_deny_host_decide_and_deny_wins():
    request = request_of(network("files.pythonhosted.org"))
    allow = make_rule("allow-host", ["@pypi"], "project")
    deny = make_rule("deny-host", ["*.pythonhosted.org"], "user")
    assert judge([allow], PolicyState(), request).outcome == Outcome.ALLOW
    assert judge([deny, allow], PolicyState(), request).outcome == Outcome.DENY
    assert judge([allow], PolicyState(), request_of(network("evil.org"))).outcome == Outcome.ASK
    with pytest.raises(RuleError, match="preset"):
        make_rule("allow-host", ["@nosuch"], "session")
    # Command rules never judge a connection, nor host rules a command.
    assert (
        judge([make_rule("deny", ["pip"], "session")], PolicyState(), request).outcome
        == Outcome.ASK
    )


def test_a_session_approval_covers_the_host_and_nothing_else():
    approved = Event(
        EventKind.APPROVAL_DECISION,
        {"request_id": "net-1", "decision": "allow", "scope": "session", "rules": [NETWORK_ASK],
         "subject": "pypi.org"},
    )  # fmt: skip
    state = observe(PolicyState(), approved)
    assert judge([], state, request_of(network("pypi.org"))).outcome == Outcome.ALLOW
    assert judge([], state, request_of(network("pypi.org", 8443))).outcome == Outcome.ALLOW
    assert judge([], state, request_of(network("evil.org"))).outcome == Outcome.ASK
    # A network request is no tool call of the turn (max-tool-calls, loop-guard do not count it).
    assert (
        observe(PolicyState(), Event(EventKind.APPROVAL_REQUEST, network("x.org"))) == PolicyState()
    )


def test_always_for_this_host_is_written_to_the_project_file(tmp_path):
    project = tmp_path / ".omnikernel" / "policy.toml"
    policy = Policy(None, project, tmp_path)
    policy.remember_always(NETWORK_ASK, "pypi.org")
    again = Policy(None, project, tmp_path)
    state = PolicyState(approvals=again.approvals)
    assert judge(again.rules(), state, request_of(network("pypi.org"))).outcome == Outcome.ALLOW
    project.write_text(project.read_text() + '\n[[rule]]\nrule = "deny-host"\npattern = "@pypi"\n')
    again.reload()
    assert judge(again.rules(), state, request_of(network("pypi.org"))).outcome == Outcome.DENY
