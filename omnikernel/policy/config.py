"""Where rules come from: built-in defaults, the user's policy file, the notebook's policy file,
and the session's ``%policy`` changes. Rules of every level apply together and the strictest
outcome wins, so a level can add rules but never weaken another level's.

Files are TOML (stdlib `tomllib`)::

    # <jupyter config dir>/omnikernel/policy.toml       (level "user")
    # <notebook folder>/.omnikernel/policy.toml         (level "project")
    [[rule]]
    rule = "deny"
    pattern = "git push --force"

    [[rule]]
    rule = "pause-every"
    usd = 5

    [[rule]]                      # turns a built-in default off (any file may):
    rule = "push-after-install"   # push-after-install, push-own-branches or ask-python
    enabled = false

    [[approved]]                  # "always for this pattern", written by the approval card
    rule = "push-after-install"
    subject = "git push"

Every bad rule is reported with its file and index. A file that does not load (bad TOML, a bad
rule) makes the policy fail closed: every action is denied with the error until it is fixed.
The sandbox keeps both files read-only for the agent.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any, ClassVar

from omnikernel.policy.rule import Match, Outcome, PolicyState, Request, Rule, RuleError
from omnikernel.policy.rules import BUILTINS, DEFAULT_RULES

DEFAULT_NAMES = tuple(cls.name for cls in DEFAULT_RULES)
LEVELS = ("default", "user", "project", "session")
PROJECT_DIR = ".omnikernel"
POLICY_FILE = "policy.toml"


class PolicyFileError(Exception):
    """A policy file does not load; the message lists every problem with file and index."""


def user_policy_path() -> Path:
    from jupyter_core.paths import jupyter_config_dir

    return Path(jupyter_config_dir()) / "omnikernel" / POLICY_FILE


def project_policy_path(notebook: str, cwd: Path) -> Path:
    """``.omnikernel/policy.toml`` beside the notebook (or in the working directory)."""
    path = Path(notebook)
    folder = path.parent if path.suffix == ".ipynb" else cwd
    return folder / PROJECT_DIR / POLICY_FILE


@dataclasses.dataclass(frozen=True)
class PolicyFile:
    path: Path
    level: str
    rules: tuple[Rule, ...] = ()
    disabled: frozenset[str] = frozenset()
    approvals: frozenset[tuple[str, str]] = frozenset()


def load_file(path: Path, level: str, base: Path | None = None) -> PolicyFile:
    """Read one policy file (a missing file is an empty policy); PolicyFileError if bad."""
    if not path.exists():
        return PolicyFile(path, level)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyFileError(f"{path}: not valid TOML: {exc}") from None
    base = base or path.parent.parent
    errors: list[str] = []
    rules: list[Rule] = []
    disabled: set[str] = set()
    unknown = set(data) - {"rule", "approved"}
    if unknown:
        errors.append(
            f"{path}: unknown table(s) {', '.join(sorted(unknown))}; use [[rule]] and [[approved]]"
        )
    entries = data.get("rule", [])
    if not isinstance(entries, list):
        errors.append(f"{path}: `rule` must be an array of tables ([[rule]])")
        entries = []
    for index, entry in enumerate(entries):
        where = f"{path}: rule #{index + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("rule"), str):
            errors.append(f'{where}: needs `rule = "NAME"` (one of {", ".join(BUILTINS)})')
            continue
        args = {k: v for k, v in entry.items() if k not in ("rule", "enabled")}
        if entry.get("enabled") is False:
            if entry["rule"] not in DEFAULT_NAMES or args:
                errors.append(
                    f"{where}: only the default rules ({', '.join(DEFAULT_NAMES)}) can be "
                    f"turned off (enabled = false)"
                )
            else:
                disabled.add(entry["rule"])
            continue
        try:
            rules.append(_rule(entry["rule"], args, level, base))
        except RuleError as exc:
            errors.append(f"{where} ({entry['rule']}): {exc}")
    approvals = set()
    for index, entry in enumerate(data.get("approved", []) or []):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in ("rule", "subject")
        ):
            errors.append(f'{path}: approved #{index + 1}: needs rule = "..." and subject = "..."')
            continue
        approvals.add((entry["rule"], entry["subject"]))
    if errors:
        raise PolicyFileError("\n".join(errors))
    return PolicyFile(path, level, tuple(rules), frozenset(disabled), frozenset(approvals))


def _rule(name: str, args: dict[str, Any] | list[Any], level: str, base: Path) -> Rule:
    from omnikernel.policy.rules import make_rule

    return make_rule(
        name, args, level, resolve_path=lambda p: str((base / Path(p).expanduser()).resolve())
    )


@dataclasses.dataclass(frozen=True)
class BrokenPolicy(Rule):
    """Stands in for a policy file that does not load: every action is denied."""

    name: ClassVar[str] = "broken-policy"
    message: str = ""

    def check(self, request: Request, state: PolicyState) -> Match | None:
        if request.kind != "action":
            return None
        return Match(
            self.name,
            Outcome.DENY,
            f"the policy does not load, so every action is "
            f"denied until it is fixed:\n{self.message}",
            level=self.level,
        )

    def describe(self) -> str:
        return self.name


class Policy:
    """The active rules of one session, by level."""

    def __init__(self, user_path: Path | None, project_path: Path | None, cwd: Path):
        self.user_path = user_path
        self.project_path = project_path
        self.cwd = cwd
        self.session_rules: list[Rule] = []
        self.session_off: set[str] = set()
        self.files: list[PolicyFile] = []
        self.errors: list[str] = []
        self.reload()

    def reload(self) -> None:
        """Read the user and project files again."""
        self.files, self.errors = [], []
        for path, level in ((self.user_path, "user"), (self.project_path, "project")):
            if path is None:
                continue
            base = self.cwd if level == "project" else path.parent
            try:
                self.files.append(load_file(path, level, base))
            except PolicyFileError as exc:
                self.errors.append(str(exc))

    @property
    def approvals(self) -> frozenset[tuple[str, str]]:
        out: frozenset[tuple[str, str]] = frozenset()
        for f in self.files:
            out |= f.approvals
        return out

    def rules(self) -> list[Rule]:
        """Every active rule, defaults first."""
        disabled = set(self.session_off)
        for f in self.files:
            disabled |= f.disabled
        out: list[Rule] = []
        if self.errors:
            out.append(BrokenPolicy("user/project", "\n".join(self.errors)))
        out.extend(cls("default") for cls in DEFAULT_RULES if cls.name not in disabled)
        for f in self.files:
            out.extend(f.rules)
        out.extend(self.session_rules)
        return out

    def add(self, name: str, args: list[str]) -> Rule:
        """``%policy add``: a session rule (RuleError if wrong)."""
        from omnikernel.policy.rules import make_rule

        rule = make_rule(
            name,
            args,
            "session",
            resolve_path=lambda p: str((self.cwd / Path(p).expanduser()).resolve()),
        )
        if rule.name in DEFAULT_NAMES:
            self.session_off.discard(rule.name)
            if any(r.name == rule.name for r in self.rules()):
                return rule
        self.session_rules.append(rule)
        return rule

    def off(self, name: str) -> list[Rule]:
        """``%policy off``: remove session rules named `name` (or the default); rules from
        files stay, because a session cannot weaken another level. Returns what was removed."""
        removed = [r for r in self.session_rules if r.name == name or r.describe() == name]
        self.session_rules = [r for r in self.session_rules if r not in removed]
        if name in DEFAULT_NAMES:
            from_files = [f.path for f in self.files if any(r.name == name for r in f.rules)]
            if from_files:
                raise RuleError(
                    f"{name} is turned on by {from_files[0]}; a session "
                    f"cannot weaken it (edit that file instead)"
                )
            self.session_off.add(name)
            removed.append(BUILTINS[name]("default"))
        if not removed:
            file_rules = [r for r in self.rules() if r.name == name or r.describe() == name]
            if file_rules:
                raise RuleError(
                    f"{name} comes from the {file_rules[0].level} policy file; a "
                    f"session cannot weaken it (edit that file instead)"
                )
            raise RuleError(f"no session rule {name!r} is active (see %policy)")
        return removed

    def load(self, path: Path) -> list[Rule]:
        """``%policy load FILE``: a file's rules become session rules (PolicyFileError if bad)."""
        loaded = load_file(path, "session", self.cwd)
        self.session_rules.extend(loaded.rules)
        self.session_off |= loaded.disabled
        return list(loaded.rules)

    def remember_always(self, rule: str, subject: str) -> Path:
        """ "Always for this pattern": append an [[approved]] entry to the project file."""
        path = self.project_path or self.cwd / PROJECT_DIR / POLICY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = f"\n[[approved]]\nrule = {json.dumps(rule)}\nsubject = {json.dumps(subject)}\n"
        with path.open("a") as fh:
            fh.write(entry)
        self.reload()
        return path
