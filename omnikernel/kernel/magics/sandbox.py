"""`%sandbox`: the backend the agents run in, and the hosts and paths opened to them.

IPython line magics acting on the kernel's `AgentSession` (see `omnikernel.kernel.magics`)."""

from __future__ import annotations

import os
import shlex

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class

from omnikernel.kernel.magics.common import SessionMagicsBase, show
from omnikernel.policy import hosts
from omnikernel.sandbox import CHOICES, SandboxUnavailableError
from omnikernel.sandbox import resolve as resolve_sandbox
from omnikernel.sandbox.host_credentials import find as find_credential
from omnikernel.sandbox.host_credentials import parse_broker


@magics_class
class SandboxMagics(SessionMagicsBase):
    @line_magic
    def sandbox(self, line: str) -> None:
        """%sandbox [auto|bwrap|firejail|off]: the OS sandbox agents run in (off: opt out).
        %sandbox allow [HOST[:PORT]|*.DOMAIN|@PRESET ...|--clear]: hosts agents may reach
        without asking (e.g. @pypi @npm; any other host asks when an agent connects).
        %sandbox read [PATH ...|--clear]: paths in a home directory agents may read.
        %sandbox broker [HOST[=ENV_VAR] ...|--clear]: hosts whose requests get your credential
        at the egress proxy (it never enters the sandbox); git pushes to them are governed."""
        word = line.strip().lower()
        session = self.session
        if word.split()[:1] == ["allow"]:
            self._allow(line.split()[1:])
            return
        if word.split()[:1] == ["broker"]:
            self._broker(line.split()[1:])
            return
        if word.split()[:1] == ["read"]:
            self._read(shlex.split(line)[1:])
            return
        if word:
            if word not in CHOICES:
                raise UsageError(f"%sandbox takes one of {', '.join(CHOICES)}, not {word!r}")
            try:
                backend = resolve_sandbox(word)
            except SandboxUnavailableError as exc:
                raise UsageError(str(exc)) from None
            session.sandbox = word
        else:
            try:
                backend = resolve_sandbox(session.sandbox)
            except SandboxUnavailableError as exc:
                show(f"Sandbox {session.sandbox}: {exc}")
                return
        if backend is None:
            show(
                "⚠ SANDBOX OFF: agents run with your own permissions (your files, secrets and "
                "the network), and reach the model gateway on a loopback TCP port any local "
                "process holding their key can use too. Every agent cell says so. "
                "`%sandbox auto` turns it back on."
            )
        else:
            show(
                f"Sandbox: {backend.name} ({session.sandbox}). Agents may write only the "
                f"notebook's folder and their private dirs (git config and hooks, shell start-up "
                f"files and the other protected paths stay read-only); home directories are "
                f"closed but for the notebook's folder"
                + (f" and {', '.join(map(str, session.readable))}" if session.readable else "")
                + "; Jupyter's dirs, the session store and secrets are hidden; the network is "
                "off but for the model gateway"
                + (f" and {', '.join(session.allow_hosts)}" if session.allow_hosts else "")
                + "; a connection to any other host asks you first."
                + (
                    f" Brokered (your credential added at the proxy): "
                    f"{', '.join(session.broker_hosts)}."
                    if session.broker_hosts
                    else ""
                )
            )

    def _broker(self, entries: list[str]) -> None:
        session = self.session
        if entries == ["--clear"]:
            session.broker_hosts = {}
        elif entries:
            try:
                found = parse_broker(entries)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            session.broker_hosts = {**session.broker_hosts, **found}
        if session.broker_hosts:
            named = ", ".join(self._credential_note(h, v) for h, v in session.broker_hosts.items())
            show(
                f"Brokered: {named}. From the agents' next turn the egress proxy answers these "
                "hosts' TLS with a CA made for this agent, and adds your own credential on the "
                "way out (git credential helper, `gh auth token`, ~/.npmrc or the variable "
                "named): it never enters the sandbox. Git pushes to them go through the policy: "
                "the session's own branches go, others ask, a force push of the default branch "
                "is refused (`%policy add push-branch PATTERN` names more branches)."
            )
        else:
            show("No brokered hosts: no credential is added to any agent's request.")

    def _credential_note(self, host: str, variable: str) -> str:
        """`host` and where its credential comes from, looked up now (never shown; the
        redactor learns it), or how to provide one."""
        found = find_credential(host, variable)
        if found is None:
            where = f"${variable} is empty, and " if variable else ""
            return (
                f"{host} (⚠ {where}no credential found on this machine: `gh auth login`, a git "
                f"credential helper, or {host}=ENV_VAR naming a variable that holds a token)"
            )
        self.session.redactor.add(found.secret, f"brokered credential for {host}")
        return f"{host} (credential from {found.source})"

    def _read(self, paths: list[str]) -> None:
        session = self.session
        if paths == ["--clear"]:
            session.readable = ()
        elif paths:
            found = []
            for name in paths:
                path = (session.cwd / os.path.expanduser(name)).resolve()
                if not path.exists():
                    raise UsageError(f"{name!r} does not exist ({path}); name a file or folder")
                found.append(path)
            session.readable = tuple(dict.fromkeys(session.readable + tuple(found)))
        if session.readable:
            show(
                f"Agents may read {', '.join(map(str, session.readable))} (from their next "
                "turn; secrets such as ~/.ssh stay hidden inside); the rest of the home "
                "directories stays closed."
            )
        else:
            show("Home directories are closed to agents but for the notebook's folder.")

    def _allow(self, rules: list[str]) -> None:
        session = self.session
        if rules == ["--clear"]:
            session.allow_hosts = ()
        elif rules:
            for rule in rules:
                try:
                    hosts.check(rule)
                except hosts.HostPatternError as exc:
                    raise UsageError(str(exc)) from None
            rules = [r.lower() if r.startswith("@") else r for r in rules]
            session.allow_hosts = tuple(dict.fromkeys(session.allow_hosts + tuple(rules)))
        presets = [p for p in session.allow_hosts if p in hosts.PRESETS]
        spelled = "".join(f" {p} is {', '.join(hosts.PRESETS[p])}." for p in presets)
        if session.allow_hosts:
            show(
                f"Agents may reach {', '.join(session.allow_hosts)} through the kernel's egress "
                f"proxy (from their next turn).{spelled} A connection to any other host asks "
                "you first (see `%policy` for allow-host / deny-host rules)."
            )
        else:
            show(
                "No hosts allowed without asking: a connection from an agent to any host but "
                "the model gateway asks you first. Presets: " + ", ".join(hosts.PRESETS) + "."
            )
