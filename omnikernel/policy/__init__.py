"""Control: stateful policies over the agents' actions and spend.

`commands` parses shell lines into the commands they run; `rules` holds the built-in rules;
`hosts` reads host patterns and names the presets; `engine` is pure (events and state in, verdicts and state out); `config` reads the levels
(user file, project file, session) and fails closed on a broken file; `amounts` parses the
dollars and tokens a budget or a pause is set in. Pure: no IPython, no session (`%policy` is in
`omnikernel.kernel.magics.policy`).
"""

from omnikernel.policy.commands import UNKNOWN, Command, ParsedLine, parse
from omnikernel.policy.config import Policy, PolicyFileError
from omnikernel.policy.engine import (
    DEFAULT_ASK,
    NETWORK_ASK,
    Verdict,
    fold,
    judge,
    observe,
    request_of,
)
from omnikernel.policy.rule import Match, Outcome, PolicyState, Request, Rule, RuleError
from omnikernel.policy.rules import BUILTINS, make_rule

__all__ = [
    "BUILTINS",
    "DEFAULT_ASK",
    "NETWORK_ASK",
    "UNKNOWN",
    "Command",
    "Match",
    "Outcome",
    "ParsedLine",
    "Policy",
    "PolicyFileError",
    "PolicyState",
    "Request",
    "Rule",
    "RuleError",
    "Verdict",
    "fold",
    "judge",
    "make_rule",
    "observe",
    "parse",
    "request_of",
]
