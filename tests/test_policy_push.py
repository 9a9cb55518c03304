"""Git pushes the broker reads, judged by the policy: a table of ref updates and verdicts, and
the session's own branches folded from its events."""

from __future__ import annotations

import pytest

from omnikernel.events import Event, EventKind
from omnikernel.policy import Outcome, Policy, PolicyState, RuleError, fold, judge, request_of

REMOTE = "github.com/acme/app"
A, B = "a" * 40, "b" * 40


def push_data(*refs: tuple[str, str], call_id: str = "push-1", default: str = "") -> dict:
    return {
        "request_id": f"r-{call_id}",
        "call_id": call_id,
        "tool": "git push",
        "action": "push",
        "summary": f"git push {REMOTE}",
        "input": {
            "remote": REMOTE,
            "default_branch": default,
            "updates": [{"ref": r, "old": A, "new": B, "kind": k} for r, k in refs],
        },
    }


def verdict(*refs: tuple[str, str], state: PolicyState | None = None, default: str = "",
            rules: tuple[tuple[str, list[str]], ...] = ()):  # fmt: skip
    policy = Policy(None, None, "/tmp")
    for name, args in rules:
        policy.add(name, args)
    return judge(
        policy.rules(), state or PolicyState(), request_of(push_data(*refs, default=default))
    )


CASES = [
    # (ref updates, default branch, rules, outcome, words in the reason)
    ([("refs/heads/agent/fix", "create")], "", (), Outcome.ALLOW, "own branches"),
    ([("refs/heads/feature", "fast-forward")], "", (), Outcome.ASK, "not a branch this session"),
    ([("refs/heads/feature", "fast-forward")], "", (("push-branch", ["feat*"]),),
     Outcome.ALLOW, "own branches"),
    ([("refs/heads/main", "fast-forward")], "", (), Outcome.ASK, "main (fast-forward)"),
    ([("refs/heads/main", "force")], "", (), Outcome.DENY, "force update of"),
    ([("refs/heads/master", "delete")], "", (), Outcome.DENY, "deletion of"),
    ([("refs/heads/trunk", "force")], "trunk", (), Outcome.DENY, "default branch 'trunk'"),
    ([("refs/heads/main", "force")], "trunk", (), Outcome.ASK, "main (force)"),
    # A push that may be a force update of the default branch: a person reads it.
    ([("refs/heads/main", "maybe-force")], "", (("push-branch", ["*"]),), Outcome.ASK,
     "may be a force update"),
    # Even a branch a push-branch rule names cannot have its default force-pushed.
    ([("refs/heads/main", "force")], "", (("push-branch", ["*"]),), Outcome.DENY, "force"),
    ([("refs/tags/v1", "create")], "", (), Outcome.ASK, "refs/tags/v1"),
    ([("refs/heads/agent/x", "create"), ("refs/heads/main", "fast-forward")], "", (),
     Outcome.ASK, "main"),
]  # fmt: skip


@pytest.mark.parametrize(("refs", "default", "rules", "outcome", "words"), CASES)
def test_push_verdicts(refs, default, rules, outcome, words):
    found = verdict(*refs, default=default, rules=rules)
    assert found.outcome == outcome, found.reason
    assert words in found.reason


def test_a_branch_the_session_created_stays_its_own_after_the_push_is_allowed():
    created = push_data(("refs/heads/agent/fix", "create"), call_id="p1")
    events = [
        Event(EventKind.APPROVAL_REQUEST, created),
        Event(EventKind.APPROVAL_DECISION, {"request_id": "r-p1", "call_id": "p1",
                                            "decision": "allow"}),
    ]  # fmt: skip
    state = fold(events)
    assert (REMOTE, "refs/heads/agent/fix") in state.own_branches
    assert not state.pending_pushes
    later = verdict(("refs/heads/agent/fix", "force"), state=state)
    assert later.outcome == Outcome.ALLOW, later.reason
    # A refused creation makes nothing the session's.
    refused = fold([events[0], Event(EventKind.APPROVAL_DECISION, {
        "request_id": "r-p1", "call_id": "p1", "decision": "deny"})])  # fmt: skip
    assert not refused.own_branches
    assert verdict(("refs/heads/agent/fix", "fast-forward"), state=refused).outcome == Outcome.ASK


def test_push_after_install_keeps_asking_for_a_push_the_broker_reads():
    state = PolicyState(installed="pip install tinydb")
    found = verdict(("refs/heads/agent/fix", "create"), state=state)
    assert found.outcome == Outcome.ASK
    assert "push-after-install" in found.rules
    assert "pip install tinydb" in found.reason


def test_a_force_push_of_main_is_denied_even_after_a_person_approved_pushes_for_the_session():
    state = PolicyState(approvals=frozenset({("push-own-branches", f"push {REMOTE} main")}))
    assert verdict(("refs/heads/main", "force"), state=state).outcome == Outcome.DENY


def test_push_branch_needs_a_pattern_and_the_default_rule_can_be_turned_off():
    policy = Policy(None, None, "/tmp")
    with pytest.raises(RuleError, match="push-branch"):
        policy.add("push-branch", [])
    policy.off("push-own-branches")
    assert "push-own-branches" not in [r.name for r in policy.rules()]
    policy.add("push-own-branches", [])
    assert "push-own-branches" in [r.name for r in policy.rules()]


def test_a_policy_file_can_turn_the_default_push_rule_off(tmp_path):
    from omnikernel.policy.config import load_file

    path = tmp_path / "policy.toml"
    path.write_text('[[rule]]\nrule = "push-own-branches"\nenabled = false\n'
                    '[[rule]]\nrule = "push-branch"\npattern = "agent/*"\n')  # fmt: skip
    loaded = load_file(path, "project", tmp_path)
    assert loaded.disabled == {"push-own-branches"}
    assert [r.describe() for r in loaded.rules] == ["push-branch agent/*"]
