"""Control, pure parts as tables: commands parsed, every built-in rule, the decision function,
policy files and state folded from events (pending approvals: test_approvals_pending.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from omnikernel.approvals import decide as approval
from omnikernel.events import Event, EventKind
from omnikernel.kernel.magics.policy import replay
from omnikernel.policy import (
    UNKNOWN,
    Outcome,
    Policy,
    PolicyFileError,
    PolicyState,
    Request,
    RuleError,
    fold,
    judge,
    make_rule,
    parse,
    request_of,
)
from omnikernel.policy.config import load_file
from omnikernel.policy.rules import PushAfterInstall, installs

INSTALLED = PolicyState(installed="npm install left-pad")


def exec_request(command: str, call_id: str = "c1") -> Request:
    return request_of(
        {
            "action": "exec",
            "tool": "Bash",
            "summary": command,
            "call_id": call_id,
            "input": {"command": command},
        }
    )


# -- commands: a corpus of spellings bash runs as `git push` / `npm install` --------------------

GIT_PUSH_SPELLINGS = [
    "git push",
    "git push origin main --force",
    "true && git push",
    "false || git push",
    "ls; git push",
    "echo hi | git push",
    "(git push)",
    "{ git push; }",
    "git push &",
    "echo $(git push)",
    "echo `git push`",
    "x=$(git push)",
    "cat <(git push)",
    "if true; then git push; fi",
    "for i in 1; do git push; done",
    "while false; do :; done; git push",
    "f() { git push; }; f",
    "'git' push",
    '"git" "push"',
    "g'i't p\"u\"sh",
    "g\\it pu\\sh",
    "$'git' $'\\x70ush'",
    "/usr/bin/git push",
    "git -C /tmp/repo push",
    "git -c user.name=x --no-pager push",
    "git --git-dir=.git push",
    "git -c alias.p=push p",
    "git -c 'alias.s=!git push' s",
    "env git push",
    "env -i FOO=1 git push",
    "env -S 'git push'",
    "command git push",
    "exec git push",
    "nice -n 5 git push",
    "nohup git push",
    "timeout 30 git push",
    "timeout -s KILL 30 git push",
    "sudo -u me git push",
    "time git push",
    "stdbuf -o0 git push",
    "xargs git push < /dev/null",
    "sh -c 'git push'",
    "bash -lc 'git push'",
    'bash -c "cd x && git push"',
    "sh -c \"sh -c 'git push'\"",
    "busybox sh -c 'git push'",
    "find . -maxdepth 0 -exec git push \\;",
    "su -c 'git push'",
    "FOO=bar git push",
    "git push 2>/dev/null",
    "git push <<< x",
    "git\tpush",
    "git \\\n push",
]
# Spellings whose meaning bash computes at run time: the most dangerous reading (they ask).
GIT_PUSH_COMPUTED = [
    "$(echo git) push",
    "a=git; $a push",
    "git${IFS}push",
    "${CMD:-git} push",
    "eval 'git push'",
    "eval git push",
    "source ./push.sh",
    ". ./push.sh",
    "./push.sh",
    "bash push.sh",
    "echo 'git push' | sh",
    "curl http://127.0.0.1/x | bash",
    'bash -c "$CMD"',
    "git p",  # an alias from a config file
    "echo push | xargs git",
    "git $(echo push)",
    "python3 -c 'import os; os.system(\"git push\")'",
    'node -e \'require("child_process").execSync("git push")\'',
    "sh -c 'git push",  # does not parse cleanly
]
NPM_INSTALL_SPELLINGS = [
    "npm install left-pad",
    "npm i left-pad",
    "npm isntall left-pad",
    "npm add left-pad",
    "npm ci",
    "npm --loglevel silent install left-pad",
    "npx cowsay hi",
    "npm exec cowsay",
    "pnpm add left-pad",
    "yarn add left-pad",
    "yarn",
    "bun i left-pad",
    "pip install requests",
    "pip3 install requests",
    "python3 -m pip install requests",
    "uv pip install requests",
    "cd web && npm i",
    "sh -c 'npm install'",
    "env CI=1 npm install",
    "'n'pm \"i\"",
]


@pytest.mark.parametrize("line", GIT_PUSH_SPELLINGS)
def test_every_spelling_of_git_push_asks_after_an_install(line):
    verdict = judge([PushAfterInstall()], INSTALLED, exec_request(line))
    assert verdict.outcome == Outcome.ASK, (line, parse(line))
    assert verdict.rules == ("push-after-install",)
    assert verdict.subject == "git push"  # resolved with certainty


@pytest.mark.parametrize("line", GIT_PUSH_COMPUTED)
def test_computed_commands_get_the_most_dangerous_reading(line):
    verdict = judge([PushAfterInstall()], INSTALLED, exec_request(line))
    assert verdict.outcome == Outcome.ASK, (line, parse(line))
    assert "push-after-install" in verdict.rules
    # The same line with a deny rule asks (a person reads it) rather than denying blindly.
    denied = judge([make_rule("deny", ["git push"], "session")], PolicyState(), exec_request(line))
    assert denied.outcome == Outcome.ASK and "may" in denied.reason


@pytest.mark.parametrize("line", NPM_INSTALL_SPELLINGS)
def test_every_spelling_of_a_package_install_is_recognised(line):
    assert installs(parse(line).commands), parse(line)


@pytest.mark.parametrize(
    "line",
    ["git status", "git log --oneline", "echo git push", "grep -r 'git push' .", "npm test",
     "cat push.txt", "git pull", "echo 'npm install'", "ls push"],
)  # fmt: skip
def test_look_alikes_are_neither_pushes_nor_installs(line):
    assert judge([PushAfterInstall()], INSTALLED, exec_request(line)).is_default_ask
    assert not installs(parse(line).commands)


def test_parse_keeps_words_after_quote_removal_and_marks_computed_ones():
    commands = parse("FOO=1 env -i 'git' -C x push $(date) | cat").commands
    assert [c.argv for c in commands] == [
        ("env", "-i", "git", "-C", "x", "push", UNKNOWN),
        ("git", "push", UNKNOWN),
        ("date",),
        ("cat",),
    ]


# -- decision tables: the first column says what the row means --------------------------------

TABLE = [
    ("push-after-install: before any install, git push gets only the default ask",
     ["push-after-install"], PolicyState(), exec_request("git push"), Outcome.ASK, ("default",)),
    ("push-after-install: after an install, git push asks by the rule",
     ["push-after-install"], INSTALLED, exec_request("git push"), Outcome.ASK,
     ("push-after-install",)),
    ("push-after-install: after an install, npm publish asks",
     ["push-after-install"], INSTALLED, exec_request("npm publish"), Outcome.ASK,
     ("push-after-install",)),
    ("push-after-install: twine upload and docker push ask too",
     ["push-after-install"], INSTALLED, exec_request("twine upload dist/* && docker push x"),
     Outcome.ASK, ("push-after-install",)),
    ("push-after-install: a session approval of git push answers the next one",
     ["push-after-install"],
     dataclasses.replace(INSTALLED, approvals=frozenset({("push-after-install", "git push")})),
     exec_request("git push"), Outcome.ALLOW, ("push-after-install",)),
    ("read-only actions are allowed without asking",
     ["push-after-install"], INSTALLED, Request(action="read", tool="Read"), Outcome.ALLOW,
     ("read-only",)),
    ("deny PATTERN: a matching command is denied",
     ["deny|rm -rf"], PolicyState(), exec_request("cd x && rm -rf /"), Outcome.DENY,
     ("deny 'rm -rf'",)),
    ("deny PATTERN: options in between still match",
     ["deny|git push --force"], PolicyState(), exec_request("git push origin --force"),
     Outcome.DENY, ("deny 'git push --force'",)),
    ("deny PATTERN: another command gets the default ask",
     ["deny|rm -rf"], PolicyState(), exec_request("rm x"), Outcome.ASK, ("default",)),
    ("deny beats ask: the strictest outcome wins regardless of order",
     ["ask|git", "deny|git push"], PolicyState(), exec_request("git push"), Outcome.DENY,
     ("deny 'git push'",)),
    ("ask PATTERN: a matching command asks by the rule (auto-approval cannot answer it)",
     ["ask|curl"], PolicyState(), exec_request("curl -s x | sh"), Outcome.ASK, ("ask 'curl'",)),
    ("ask-write-outside: a write outside the folder asks",
     ["ask-write-outside|/work"], PolicyState(),
     request_of({"action": "write", "tool": "Write", "input": {"file_path": "/etc/passwd"}}),
     Outcome.ASK, ("ask-write-outside /work",)),
    ("ask-write-outside: a write inside gets the default ask",
     ["ask-write-outside|/work"], PolicyState(),
     request_of({"action": "edit", "tool": "Edit", "input": {"file_path": "/work/a/b.py"}}),
     Outcome.ASK, ("default",)),
    ("ask-write-outside: a relative path climbing out asks",
     ["ask-write-outside|/work"], PolicyState(),
     request_of({"action": "write", "tool": "Write", "input": {"path": "../x"}}, "/work"),
     Outcome.ASK, ("ask-write-outside /work",)),
    ("max-tool-calls: the call after N in a turn asks",
     ["max-tool-calls|2"], PolicyState(turn_calls=(("a", "k1"), ("b", "k2"))),
     Request(action="read", call_id="c", key="k3"), Outcome.ASK, ("max-tool-calls 2",)),
    ("max-tool-calls: the Nth call is fine",
     ["max-tool-calls|2"], PolicyState(turn_calls=(("a", "k1"),)),
     Request(action="read", call_id="c", key="k3"), Outcome.ALLOW, ("read-only",)),
    ("loop-guard: the same call the Nth time in a row asks",
     ["loop-guard|3"], PolicyState(turn_calls=(("a", "k"), ("b", "k"))),
     Request(action="read", call_id="c", key="k"), Outcome.ASK, ("loop-guard 3",)),
    ("loop-guard: a different call in between resets the count",
     ["loop-guard|3"], PolicyState(turn_calls=(("a", "k"), ("b", "x"), ("c", "k"))),
     Request(action="read", call_id="d", key="k"), Outcome.ALLOW, ("read-only",)),
    ("pause-every: crossing a multiple pauses the next action",
     ["pause-every|5"], PolicyState(spent_usd=5.2), Request(action="read"), Outcome.PAUSE,
     ("pause-every 5",)),
    ("pause-every: crossing a multiple pauses the next model call",
     ["pause-every|5"], PolicyState(spent_usd=10.1, pause_marks=((5.0, 1),)),
     Request(kind="model_call"), Outcome.PAUSE, ("pause-every 5",)),
    ("pause-every: an approved multiple does not pause again",
     ["pause-every|5"], PolicyState(spent_usd=9.9, pause_marks=((5.0, 1),)),
     Request(kind="model_call"), Outcome.ALLOW, ("read-only",)),
    ("budget: past the cap, actions are denied",
     ["budget|1"], PolicyState(spent_usd=1.5), exec_request("ls"), Outcome.DENY, ("budget 1",)),
    ("budget: under the cap, it says nothing",
     ["budget|1"], PolicyState(spent_usd=0.5), exec_request("ls"), Outcome.ASK, ("default",)),
    ("a pause and an ask together: one answer covers both",
     ["pause-every|1", "ask|ls"], PolicyState(spent_usd=1.5), exec_request("ls"), Outcome.PAUSE,
     ("pause-every 1", "ask 'ls'")),
]  # fmt: skip


@pytest.mark.parametrize(("meaning", "rules", "state", "request_", "outcome", "by"), TABLE,
                         ids=[row[0] for row in TABLE])  # fmt: skip
def test_decision_table(meaning, rules, state, request_, outcome, by):
    built = [make_rule(r.split("|")[0], r.split("|")[1:], "session") for r in rules]
    verdict = judge(built, state, request_)
    assert (verdict.outcome, verdict.rules) == (outcome, by), verdict


def test_a_rule_that_fails_denies():
    class Broken(PushAfterInstall):
        def check(self, request, state):
            raise RuntimeError("boom")

    verdict = judge([Broken()], PolicyState(), Request(action="read"))
    assert verdict.outcome == Outcome.DENY and "boom" in verdict.reason


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [("nosuch", [], "unknown rule"), ("pause-every", ["x"], "must be a number"),
     ("pause-every", ["-1"], "positive"), ("loop-guard", ["1"], "at least 2"),
     ("deny", [], "takes PATTERN"), ("ask-write-outside", ["rel"], "absolute"),
     ("deny", ["'unclosed"], "cannot read")],
)  # fmt: skip
def test_bad_rules_say_what_is_expected(name, args, message):
    with pytest.raises(RuleError, match=message):
        make_rule(name, args, "session")


# -- the decision function: auto-approval answers only the default ask --------------------------

ASKED = Event(EventKind.APPROVAL_REQUEST, {"action": "exec", "tool": "Bash", "summary": "x"})


@pytest.mark.parametrize(
    ("meaning", "rules", "state", "line", "auto", "verdict", "by"),
    [
        ("without a rule and auto-approval, a person is asked", [], PolicyState(), "ls",
         False, "ask", "default"),
        ("auto-approval answers the default ask", [], PolicyState(), "ls", True, "allow",
         "auto-approve"),
        ("auto-approval never answers a rule's ask", ["push-after-install"], INSTALLED,
         "git push", True, "ask", "push-after-install"),
        ("auto-approval never answers a deny", ["deny|ls"], PolicyState(), "ls", True, "deny",
         "deny 'ls'"),
        ("auto-approval never answers a pause", ["pause-every|1"], PolicyState(spent_usd=2),
         "ls", True, "pause", "pause-every 1"),
    ],
)  # fmt: skip
def test_decide(meaning, rules, state, line, auto, verdict, by):
    built = [make_rule(r.split("|")[0], r.split("|")[1:], "session") for r in rules]
    decision = approval.decide(ASKED, judge(built, state, exec_request(line)), auto_approve=auto)
    assert (decision.verdict, decision.by) == (verdict, by)


def test_an_unanswered_default_ask_says_how_to_allow():
    asked = approval.decide(
        ASKED, judge([], PolicyState(), exec_request("rm -rf x")), auto_approve=False
    )
    request = Event(EventKind.APPROVAL_REQUEST, {"tool": "Bash", "summary": "rm -rf x"})
    decision = approval.unanswered(request, asked, 600)
    assert not decision.allow and decision.by == "timeout"
    assert "%autoapprove on" in decision.reason and "OMNIKERNEL_AUTO_APPROVE=1" in decision.reason
    assert "Bash `rm -rf x`" in decision.reason and "600 s" in decision.reason


# -- state: folded from the stored events, so it survives a restart -----------------------------


def stored(kind: EventKind, **data) -> Event:
    return Event(kind, data)


def test_an_install_arms_push_after_install_only_once_it_ran():
    install = {
        "action": "exec",
        "tool": "Bash",
        "summary": "npm i x",
        "call_id": "1",
        "input": {"command": "npm i x"},
    }
    asked = fold([stored(EventKind.TOOL_CALL, **install)])
    assert asked.installed == ""  # asked about, not run
    denied = fold(
        [
            stored(EventKind.TOOL_CALL, **install),
            stored(EventKind.APPROVAL_DECISION, request_id="r", decision="deny", call_id="1"),
            stored(EventKind.TOOL_RESULT, call_id="1", output="denied", is_error=True),
        ]
    )
    assert denied.installed == ""
    ran = fold(
        [
            stored(EventKind.TOOL_CALL, **install),
            stored(EventKind.TOOL_RESULT, call_id="1", output="added 1 package"),
        ]
    )
    assert ran.installed == "npm i x"


def test_session_approvals_and_pause_marks_are_folded_from_decisions():
    state = fold(
        [
            stored(
                EventKind.APPROVAL_DECISION,
                request_id="r",
                decision="allow",
                scope="session",
                rules=["push-after-install"],
                subject="git push",
            ),
            stored(
                EventKind.APPROVAL_DECISION,
                request_id="p",
                decision="allow",
                scope="once",
                rules=["pause-every 5"],
                pause_marks=[[5.0, 2]],
            ),
            stored(EventKind.SPEND, cost_usd=1.25),
            stored(EventKind.SPEND, cost_usd=None),
        ]
    )
    assert ("push-after-install", "git push") in state.approvals
    assert state.pause_mark(5.0) == 2 and state.spent_usd == 1.25


# -- policy files --------------------------------------------------------------------------------


def test_policy_files_load_with_levels_and_relative_paths(tmp_path: Path):
    project = tmp_path / ".omnikernel" / "policy.toml"
    project.parent.mkdir()
    project.write_text(
        '[[rule]]\nrule = "deny"\npattern = "git push --force"\n\n'
        '[[rule]]\nrule = "pause-every"\nusd = 5\n\n'
        '[[rule]]\nrule = "ask-write-outside"\npath = "."\n'
    )
    user = tmp_path / "user.toml"
    user.write_text('[[rule]]\nrule = "max-tool-calls"\nn = 40\n')
    policy = Policy(user, project, tmp_path)
    described = [(r.describe(), r.level) for r in policy.rules()]
    assert described == [
        ("push-after-install", "default"),
        ("push-own-branches", "default"),
        ("ask-python", "default"),
        ("max-tool-calls 40", "user"),
        ("deny 'git push --force'", "project"),
        ("pause-every 5", "project"),
        (f"ask-write-outside {tmp_path}", "project"),
    ]


def test_each_bad_rule_is_reported_with_file_and_index_and_the_policy_fails_closed(tmp_path):
    bad = tmp_path / ".omnikernel" / "policy.toml"
    bad.parent.mkdir()
    bad.write_text(
        '[[rule]]\nrule = "deny"\n\n[[rule]]\nrule = "pause-every"\nusd = -3\n\n'
        '[[rule]]\nrule = "nosuch"\n'
    )
    with pytest.raises(PolicyFileError) as info:
        load_file(bad, "project")
    message = str(info.value)
    assert f"{bad}: rule #1 (deny)" in message and "rule #2 (pause-every)" in message
    assert "rule #3 (nosuch)" in message
    policy = Policy(None, bad, tmp_path)
    verdict = judge(policy.rules(), PolicyState(), Request(action="read", tool="Read"))
    assert verdict.outcome == Outcome.DENY and "rule #3" in verdict.reason
    bad.write_text("[[rule]\n")
    policy.reload()
    assert "not valid TOML" in policy.errors[0]


def test_a_session_cannot_weaken_a_file_rule_but_can_turn_off_the_default(tmp_path):
    project = tmp_path / "p.toml"
    project.write_text('[[rule]]\nrule = "deny"\npattern = "rm"\n')
    policy = Policy(None, project, tmp_path)
    with pytest.raises(RuleError, match="cannot weaken"):
        policy.off("deny")
    policy.off("push-after-install")
    policy.off("ask-python")
    assert [r.name for r in policy.rules()] == ["push-own-branches", "deny"]
    policy.add("push-after-install", [])
    policy.add("loop-guard", ["3"])
    assert [r.name for r in policy.rules()] == [
        "push-after-install", "push-own-branches", "deny", "loop-guard"
    ]  # fmt: skip
    path = policy.remember_always("push-after-install", 'git "push"')
    assert ("push-after-install", 'git "push"') in Policy(None, path, tmp_path).approvals


def test_replay_lists_what_a_policy_would_have_decided(tmp_path):
    events = [
        stored(
            EventKind.TOOL_CALL,
            action="exec",
            tool="Bash",
            summary="npm i x",
            call_id="1",
            input={"command": "npm i x"},
        ),
        stored(EventKind.TOOL_RESULT, call_id="1", output="ok"),
        stored(EventKind.SPEND, cost_usd=2.5),
        stored(
            EventKind.TOOL_CALL,
            action="exec",
            tool="Bash",
            summary="git push",
            call_id="2",
            input={"command": "git push"},
        ),
        stored(EventKind.TOOL_CALL, action="read", tool="Read", summary="a.txt", call_id="3"),
        stored(
            EventKind.TOOL_CALL,
            action="exec",
            tool="Bash",
            summary="rm -rf /",
            call_id="4",
            input={"command": "rm -rf /"},
        ),
    ]
    rules = [
        PushAfterInstall(),
        make_rule("pause-every", ["2"], "test"),
        make_rule("deny", ["rm"], "test"),
    ]
    rows = replay(rules, events, tmp_path)
    assert [row[2] for row in rows] == ["ask", "pause", "ask", "allow", "deny"]
    assert rows[2][3] == "push-after-install" and rows[1][1].startswith("model call")


def test_the_project_policy_folder_is_one_the_sandbox_keeps_read_only():
    from omnikernel.policy.config import PROJECT_DIR
    from omnikernel.sandbox.spec import POLICY_PATHS

    assert PROJECT_DIR in POLICY_PATHS  # an agent must not loosen its own rules
