"""Host patterns and the named presets of the hosts people install from.

A pattern is ``host`` (ports 80 and 443), ``host:port``, ``*.domain`` (any subdomain, not the
domain itself), or a preset's name (``@pypi``), which stands for every host in its row of
`PRESETS`. ``%sandbox allow``, ``c.OmniKernel.sandbox_allow`` and the policy rules
``allow-host`` / ``deny-host`` all take them. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_PORTS = (80, 443)

#: What each preset opens: the hosts its tools fetch from (an index and where it serves files).
PRESETS: dict[str, tuple[str, ...]] = {
    "@pypi":     ("pypi.org", "files.pythonhosted.org"),
    "@npm":      ("registry.npmjs.org", "registry.yarnpkg.com"),
    "@github":   ("github.com", "api.github.com", "codeload.github.com",
                  "objects.githubusercontent.com", "raw.githubusercontent.com"),
    "@crates":   ("crates.io", "index.crates.io", "static.crates.io"),
    "@go":       ("proxy.golang.org", "sum.golang.org"),
    "@rubygems": ("rubygems.org", "index.rubygems.org"),
    "@conda":    ("conda.anaconda.org", "repo.anaconda.com"),
    "@debian":   ("deb.debian.org", "security.debian.org"),
    "@huggingface": ("huggingface.co", "cdn-lfs.huggingface.co", "cas-bridge.xethub.hf.co"),
}  # fmt: skip


class HostPatternError(ValueError):
    """A host pattern that cannot be read; the message says what it takes."""


def expand(patterns: Iterable[str]) -> tuple[str, ...]:
    """`patterns` with every preset replaced by its hosts, each checked, in order, once."""
    out: list[str] = []
    for pattern in patterns:
        out += PRESETS.get(pattern.lower()) or [check(pattern)]
    return tuple(dict.fromkeys(out))


def unknown_preset(name: str) -> str:
    return f"no preset {name!r}; the presets are {', '.join(PRESETS)}"


def check(pattern: str) -> str:
    """`pattern` if it reads as ``host``, ``host:port``, ``*.domain`` or a preset's name."""
    if pattern.lower() in PRESETS:
        return pattern
    if pattern.startswith("@"):
        raise HostPatternError(unknown_preset(pattern))
    host, _, port = pattern.partition(":")
    bad = not host or "/" in pattern or "*" in host.removeprefix("*.") or host == "*."
    if bad or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise HostPatternError(
            f"{pattern!r} is not HOST, HOST:PORT, *.DOMAIN or a preset ({', '.join(PRESETS)})"
        )
    return pattern


def matches(pattern: str, host: str, port: int) -> bool:
    """Whether `pattern` (a preset too) covers `host`:`port`."""
    if pattern.lower() in PRESETS:
        return any(matches(p, host, port) for p in PRESETS[pattern.lower()])
    host = host.lower().rstrip(".")
    rule_host, _, rule_port = pattern.lower().partition(":")
    if rule_port and not rule_port.isdigit():
        return False  # not a pattern (`check` refuses it): it matches nothing
    if port not in ((int(rule_port),) if rule_port else DEFAULT_PORTS):
        return False
    if rule_host.startswith("*."):
        return host.endswith(rule_host[1:])
    return host == rule_host


def allowed(patterns: Iterable[str], host: str, port: int) -> bool:
    """Whether any of `patterns` covers `host`:`port`."""
    return any(matches(p, host, port) for p in patterns)


def presets_of(host: str, port: int = 443) -> list[str]:
    """The presets that open `host` (what a refusal suggests besides the host itself)."""
    return [name for name, hosts in PRESETS.items() if allowed(hosts, host, port)]
