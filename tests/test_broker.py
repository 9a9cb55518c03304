"""The credential broker on loopback, with real git: a stand-in github.com (``git
http-backend`` over TLS with basic auth) reached through the egress proxy under its real name
(``egress_resolve``). The client holds no credential: the broker adds it; pushes go through the
policy; refused ones fail in git's own words plus ours. Each protection is also shown missing:
the attack that then gets through."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from omnikernel.events import Event, EventKind
from omnikernel.policy import Outcome, Policy, PolicyState, fold, judge, request_of
from omnikernel.sandbox.broker import Broker
from omnikernel.sandbox.egress import EgressProxy
from omnikernel.sandbox.git_push import Push
from omnikernel.sandbox.host_credentials import Credential
from omnikernel.sandbox.session_ca import SessionCA
from omnikernel.sandbox.upstream import EgressRoutes

from .git_standin import GIT_ENV, GitStandIn

pytestmark = pytest.mark.process  # real git, git http-backend, a TLS server

TOKEN = "ghp_standin0123456789abcdefSECRET"
REPO = "acme/app.git"


class Proxy:
    """The egress proxy with a broker, on its own loop and thread, reached by git through a
    loopback TCP relay to its unix socket (as the sandbox's relay does)."""

    def __init__(
        self,
        tmp: Path,
        standin: GitStandIn,
        *,
        broker: bool,
        answer: str = "deny",
        other: GitStandIn | None = None,
    ):
        self.tmp, self.standin, self.answer = tmp, standin, answer
        self.loop = asyncio.new_event_loop()
        self.asked: list[tuple[str, str, Push]] = []
        self.secrets: list[tuple[str, str]] = []
        self.state = PolicyState()
        self.policy = Policy(None, None, str(tmp))
        resolve = {("github.com", 443): ("127.0.0.1", standin.port)}
        if other is not None:  # another allowed host, not brokered
            resolve[(other.name, 443)] = ("127.0.0.1", other.port)
        routes = EgressRoutes(resolve=resolve, ca_file=standin.ca_path)
        self.ca = SessionCA.create(("github.com",))
        self.bundle = self.ca.write_bundle(tmp / "bundle.pem")
        self.broker = (
            Broker(
                {"github.com": ""},
                self.ca,
                ask_push=self.ask_push,
                on_secret=lambda v, label: self.secrets.append((v, label)),
                routes=routes,
                find_credential=lambda host, var: Credential(host, "octocat", TOKEN, "test"),
            )
            if broker
            else None
        )
        allowed = ("github.com", *((other.name,) if other is not None else ()))
        self.proxy = EgressProxy(allowed, tmp / "egress.sock", routes, broker=self.broker)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    async def _start(self) -> int:
        await self.proxy.start()

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            from omnikernel.sandbox.bridge import pipe

            up_reader, up_writer = await asyncio.open_unix_connection(str(self.proxy.path))
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self.relay = await asyncio.start_server(relay, "127.0.0.1", 0)
        return int(self.relay.sockets[0].getsockname()[1])

    async def ask_push(self, remote: str, default: str, push: Push) -> str | None:
        """The session's part, in small: the policy's verdict; a person (here: `answer`) when
        it asks; the decision folded into the state."""
        self.asked.append((remote, default, push))
        call = f"push-{len(self.asked)}"
        data = {
            "request_id": call, "call_id": call, "tool": "git push", "action": "push",
            "summary": f"git push {remote}",
            "input": {"remote": remote, "default_branch": default,
                      "updates": [u.data() for u in push.updates]},
        }  # fmt: skip
        verdict = judge(self.policy.rules(), self.state, request_of(data))
        outcome = verdict.outcome
        if outcome == Outcome.ASK:
            outcome = Outcome.ALLOW if self.answer == "allow" else Outcome.DENY
        decision = "allow" if outcome == Outcome.ALLOW else "deny"
        self.state = fold(
            [Event(EventKind.APPROVAL_REQUEST, data),
             Event(EventKind.APPROVAL_DECISION, {"request_id": call, "call_id": call,
                                                 "decision": decision})],
            self.state,
        )  # fmt: skip
        return None if decision == "allow" else f"policy refused this push: {verdict.reason}"

    def close(self) -> None:
        async def stop() -> None:
            self.relay.close()
            await self.proxy.close()
            current = asyncio.current_task()
            left = [t for t in asyncio.all_tasks() if t is not current]
            for task in left:  # connections git left open
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[GitStandIn]:
    root = tmp_path / "server"
    root.mkdir()
    with GitStandIn(root, "github.com", "octocat", TOKEN) as server:
        server.bare(REPO)
        yield server


def client_env(tmp: Path, proxy: Proxy) -> dict[str, str]:
    """A client like the sandbox's: no credential, no helper, no prompt; the proxy and the
    session CA bundle in its environment."""
    home = tmp / "client-home"
    home.mkdir(exist_ok=True)
    url = f"http://127.0.0.1:{proxy.port}"
    return {
        **GIT_ENV,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HTTPS_PROXY": url,
        "https_proxy": url,
        "GIT_SSL_CAINFO": str(proxy.bundle),
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }


def git(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def clone(tmp: Path, env: dict[str, str]) -> Path:
    done = git(tmp, env, "clone", "-q", f"https://github.com/{REPO}", "work")
    assert done.returncode == 0, done.stderr
    return tmp / "work"


def commit(work: Path, env: dict[str, str], name: str) -> str:
    (work / name).write_text(name + "\n")
    assert git(work, env, "add", name).returncode == 0
    assert git(work, env, "commit", "-q", "-m", name).returncode == 0
    return git(work, env, "rev-parse", "HEAD").stdout.strip()


def test_a_push_to_a_new_branch_lands_with_the_brokered_credential(tmp_path, standin):
    proxy = Proxy(tmp_path, standin, broker=True)
    try:
        env = client_env(tmp_path, proxy)
        work = clone(tmp_path, env)
        git(work, env, "checkout", "-q", "-b", "agent/fix")
        head = commit(work, env, "fix.txt")
        done = git(work, env, "push", "origin", "agent/fix")
        assert done.returncode == 0, done.stderr
        assert standin.ref(REPO, "refs/heads/agent/fix") == head
        # The broker added the credential; the client never had it.
        assert any(TOKEN not in a and a.startswith("Basic ") for a in standin.seen_auth)
        assert TOKEN not in str(env) and TOKEN not in (work / ".git" / "config").read_text()
        # The session learned it to redact before the first use.
        assert (TOKEN, "brokered credential for github.com") in proxy.secrets
        remote, default, push = proxy.asked[-1]
        assert remote == "github.com/acme/app"
        assert default == "main"  # from the upload-pack advertisement
        assert [(u.ref, u.kind) for u in push.updates] == [("refs/heads/agent/fix", "create")]
        # The branch is now the session's: a later force update of it goes through too.
        git(work, env, "commit", "-q", "--amend", "-m", "fix, reworded")
        done = git(work, env, "push", "-f", "origin", "agent/fix")
        assert done.returncode == 0, done.stderr
        # (the amended commit sits on main's tip, which the pack leaves out; the broker asks
        # the remote for the commits in between and so knows it for a force update)
        assert [u.kind for u in proxy.asked[-1][2].updates] == ["force"]
    finally:
        proxy.close()


def test_a_push_to_a_branch_not_the_sessions_is_refused_in_gits_words(tmp_path, standin):
    proxy = Proxy(tmp_path, standin, broker=True, answer="deny")
    try:
        env = client_env(tmp_path, proxy)
        work = clone(tmp_path, env)
        before = standin.ref(REPO, "refs/heads/main")
        commit(work, env, "direct.txt")
        done = git(work, env, "push", "origin", "main")
        assert done.returncode != 0
        assert "[remote rejected]" in done.stderr and "main -> main" in done.stderr
        assert "Omnigent" in done.stderr and "not a branch this session" in done.stderr
        assert standin.ref(REPO, "refs/heads/main") == before
    finally:
        proxy.close()


def test_a_force_push_of_main_is_denied_even_when_the_person_would_allow(tmp_path, standin):
    proxy = Proxy(tmp_path, standin, broker=True, answer="allow")
    try:
        env = client_env(tmp_path, proxy)
        work = clone(tmp_path, env)
        before = standin.ref(REPO, "refs/heads/main")
        git(work, env, "checkout", "-q", "--orphan", "rewrite")
        commit(work, env, "rewritten.txt")
        done = git(work, env, "push", "-f", "origin", "rewrite:main")
        assert done.returncode != 0
        assert "force update of github.com/acme/app's default branch 'main'" in done.stderr
        assert standin.ref(REPO, "refs/heads/main") == before
        # And a person's allow does land an ordinary push of main (the ask is a real ask).
        git(work, env, "checkout", "-q", "-B", "main", "origin/main")
        head = commit(work, env, "ordinary.txt")
        done = git(work, env, "push", "origin", "main")
        assert done.returncode == 0, done.stderr
        assert standin.ref(REPO, "refs/heads/main") == head
    finally:
        proxy.close()


def test_a_rebased_main_is_known_for_a_force_push_and_denied(tmp_path, standin):
    """The everyday force push: main reset and rebuilt on an older commit. The pack alone does
    not show whether it forces (it leaves off at a commit the server has); the broker asks the
    remote for the commits in between and denies it."""
    proxy = Proxy(tmp_path, standin, broker=True, answer="allow")
    try:
        env = client_env(tmp_path, proxy)
        work = clone(tmp_path, env)
        commit(work, env, "second.txt")
        assert git(work, env, "push", "origin", "main").returncode == 0  # asked, allowed
        pushed = standin.ref(REPO, "refs/heads/main")
        git(work, env, "reset", "-q", "--hard", "HEAD~1")
        commit(work, env, "instead.txt")
        done = git(work, env, "push", "-f", "origin", "main")
        assert done.returncode != 0
        assert "force update of github.com/acme/app's default branch 'main'" in done.stderr
        assert [u.kind for u in proxy.asked[-1][2].updates] == ["force"]
        assert standin.ref(REPO, "refs/heads/main") == pushed
    finally:
        proxy.close()


def test_a_fast_forward_through_a_commit_the_server_has_is_known_as_one(tmp_path, standin):
    """Pushing main to a branch's commit already on the server: an empty pack, yet a
    fast-forward, which the broker learns from the remote (and asks, main not being the
    session's)."""
    proxy = Proxy(tmp_path, standin, broker=True, answer="deny")
    try:
        env = client_env(tmp_path, proxy)
        work = clone(tmp_path, env)
        git(work, env, "checkout", "-q", "-b", "agent/x")
        commit(work, env, "x.txt")
        assert git(work, env, "push", "origin", "agent/x").returncode == 0
        done = git(work, env, "push", "origin", "agent/x:main")
        assert done.returncode != 0
        assert [u.kind for u in proxy.asked[-1][2].updates] == ["fast-forward"]
        assert "main (fast-forward)" in done.stderr
    finally:
        proxy.close()


def test_after_an_install_even_the_sessions_own_branch_asks(tmp_path, standin):
    """push-after-install keeps asking for a push the broker reads, whatever command made it."""
    proxy = Proxy(tmp_path, standin, broker=True, answer="deny")
    proxy.state = PolicyState(installed="pip install tinydb")
    try:
        env = client_env(tmp_path, proxy)
        work = clone(tmp_path, env)
        git(work, env, "checkout", "-q", "-b", "agent/after-install")
        commit(work, env, "a.txt")
        done = git(work, env, "push", "origin", "agent/after-install")
        assert done.returncode != 0
        assert "push-after-install" in done.stderr and "pip install tinydb" in done.stderr
        assert not standin.ref(REPO, "refs/heads/agent/after-install")
    finally:
        proxy.close()


def test_deleting_the_default_branch_is_denied(tmp_path, standin):
    proxy = Proxy(tmp_path, standin, broker=True, answer="allow")
    try:
        env = client_env(tmp_path, proxy)
        work = clone(tmp_path, env)
        done = git(work, env, "push", "origin", ":main")
        assert done.returncode != 0
        assert "a deletion of github.com/acme/app's default branch 'main'" in done.stderr
        assert standin.ref(REPO, "refs/heads/main")
    finally:
        proxy.close()


def test_without_the_broker_the_push_fails_for_want_of_a_credential(tmp_path, standin):
    """The host is allowed but not brokered: a plain tunnel, TLS end to end, and no credential
    anywhere in reach: git cannot authenticate (as before brokering existed)."""
    proxy = Proxy(tmp_path, standin, broker=False)
    try:
        env = client_env(tmp_path, proxy)
        env["GIT_SSL_CAINFO"] = str(standin.ca_path)  # the stand-in's own certificate, tunnelled
        done = git(tmp_path, env, "clone", "-q", f"https://github.com/{REPO}", "work")
        assert done.returncode != 0
        assert "could not read Username" in done.stderr or "Authentication failed" in done.stderr
        assert all(a == "" for a in standin.seen_auth)
    finally:
        proxy.close()


def test_attack_without_the_push_rule_a_push_to_main_lands(tmp_path, standin):
    """The protection shown missing: with push-own-branches turned off and nobody asked, the
    same push to main that was refused above lands."""
    proxy = Proxy(tmp_path, standin, broker=True, answer="deny")
    proxy.policy.off("push-own-branches")
    proxy.answer = "allow"  # nothing asks now: the default ask stands for "no rule"
    try:
        env = client_env(tmp_path, proxy)
        work = clone(tmp_path, env)
        head = commit(work, env, "direct.txt")
        assert git(work, env, "push", "origin", "main").returncode == 0
        assert standin.ref(REPO, "refs/heads/main") == head
    finally:
        proxy.close()


def curl(proxy: Proxy, env: dict[str, str], url: str, *extra: str) -> str:
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed; install it with: make system-deps")
    done = subprocess.run(
        ["curl", "-sS", "--proxy", f"http://127.0.0.1:{proxy.port}", "--cacert",
         str(proxy.bundle), *extra, url],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.stdout + done.stderr


@pytest.mark.parametrize("scrub", [True, False])
def test_attack_a_host_that_reflects_headers_hands_back_no_credential(tmp_path, standin, scrub):
    """The agent asks the brokered host to echo its request: the credential the broker added
    comes back in the body. Scrubbed (the protection), it is all asterisks; unscrubbed, the
    agent has it."""
    proxy = Proxy(tmp_path, standin, broker=True)
    assert proxy.broker is not None
    proxy.broker.scrub = scrub
    try:
        out = curl(proxy, client_env(tmp_path, proxy), "https://github.com/echo-headers")
        assert "authorization: " in out, out  # (h11 writes header names in lower case)
        assert bool(leaks(out)) is not scrub, out
    finally:
        proxy.close()


def test_attack_the_agents_own_authorization_header_is_replaced(tmp_path, standin):
    """A credential of the agent's making (or a header meant to confuse) never reaches the
    host: the broker drops every Authorization the sandbox sends and adds the user's."""
    proxy = Proxy(tmp_path, standin, broker=True)
    try:
        out = curl(
            proxy, client_env(tmp_path, proxy), "https://github.com/echo-headers",
            "-H", "Authorization: Basic bWFsbG9yeTpmb3JnZWQ=", "-H", "Proxy-Authorization: x",
        )  # fmt: skip
        assert "bWFsbG9yeTpmb3JnZWQ=" not in out and "proxy-authorization" not in out.lower()
        assert out.lower().count("authorization:") == 1, out
    finally:
        proxy.close()


def test_another_allowed_host_is_tunnelled_untouched(tmp_path, standin):
    """Only brokered hosts are intercepted: another allowed host's TLS goes end to end (the
    client sees that host's own certificate, which the session CA could not have made) and no
    credential is added to its requests."""
    other_root = tmp_path / "other"
    other_root.mkdir()
    with GitStandIn(other_root, "other.example", "x", "y") as other:
        proxy = Proxy(tmp_path, standin, broker=True, other=other)
        try:
            env = client_env(tmp_path, proxy)
            url = "https://other.example/echo-headers"
            # Trusting only the session CA's bundle fails: the certificate is other.example's.
            assert "certificate" in curl(proxy, env, url).lower()
            out = curl(proxy, env, url, "--cacert", str(other.ca_path))
            assert "Host: other.example" in out and "Authorization" not in out, out
            assert leaks(out) == [] and proxy.secrets == []
        finally:
            proxy.close()


@pytest.mark.parametrize(
    "path",
    ["/acme/app.git/git%2Dreceive-pack", "/acme/app.git/git-receive-pack/", "/acme/app.git/x"],
)
def test_attack_a_push_spelled_otherwise_is_still_read_as_a_push(tmp_path, standin, path):
    """A receive-pack request with its path encoded, a trailing slash, or only its content type
    saying what it is: judged as a push all the same (here: an update of main the pack does not
    show to be a fast-forward: asked, and refused)."""
    from dulwich.protocol import pkt_line

    proxy = Proxy(tmp_path, standin, broker=True, answer="deny")
    main = standin.ref(REPO, "refs/heads/main")
    body = pkt_line(f"{main} {'1' * 40} refs/heads/main\0report-status".encode()) + pkt_line(None)
    (tmp_path / "body").write_bytes(body)
    try:
        out = curl(
            proxy, client_env(tmp_path, proxy), f"https://github.com{path}",
            "--data-binary", f"@{tmp_path / 'body'}",
            "-H", "Content-Type: application/x-git-receive-pack-request",
        )  # fmt: skip
        assert proxy.asked, out
        assert "ng refs/heads/main" in out and "may be a force update" in out, out
        assert standin.ref(REPO, "refs/heads/main") == main
    finally:
        proxy.close()


# -- inside a real sandbox ---------------------------------------------------------------------

DUMP = """
echo ==ENV==; env
echo ==PROC==; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n'
echo ==FILES==; find "$HOME" "$PWD" /tmp -type f -size -1M -exec cat {} + 2>/dev/null
echo ==GITCONFIG==; git -C app config --list --show-origin 2>/dev/null
"""


def sandboxed(backend: str, tmp: Path, standin: GitStandIn, env_extra: dict[str, str], script: str):
    from omnikernel.sandbox import SandboxSpec, resolve, start_sandboxed
    from omnikernel.sandbox.broker_setup import BrokerSetup

    work, home = tmp / "work", tmp / "agent-home"
    work.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    asked: list[tuple[str, str, Push]] = []

    async def ask_push(remote: str, default: str, push: Push) -> str | None:
        asked.append((remote, default, push))
        data = {"call_id": "p", "action": "push", "tool": "git push",
                "input": {"remote": remote, "default_branch": default,
                          "updates": [u.data() for u in push.updates]}}  # fmt: skip
        verdict = judge(Policy(None, None, str(tmp)).rules(), PolicyState(), request_of(data))
        return None if verdict.outcome == Outcome.ALLOW else verdict.reason

    spec = SandboxSpec(
        workdir=work,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "LANG": "C.UTF-8",
            **GIT_ENV,
            **env_extra,
        },  # fmt: skip
        writable=(home,),
        egress_routes=EgressRoutes(
            resolve={("github.com", 443): ("127.0.0.1", standin.port)}, ca_file=standin.ca_path
        ),
        broker=BrokerSetup((("github.com", "OMK_TEST_GH_TOKEN"),), ask_push=ask_push),
    )

    async def main() -> tuple[int, str]:
        proc = await start_sandboxed(["/bin/bash", "-c", script], spec, resolve(backend))
        proc.stdin.close()
        out, err = await asyncio.wait_for(proc.process.communicate(), 180)
        await proc.kill()
        return proc.returncode or 0, (out + err).decode(errors="replace")

    code, out = asyncio.run(main())
    return code, out, asked


def leaks(text: str) -> list[str]:
    import base64

    from omnikernel.store.redact import variants

    return [form for form in variants(TOKEN) if form in text] + (
        ["basic"] if base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode() in text else []
    )


@pytest.mark.sandbox
@pytest.mark.parametrize("backend", ["bwrap", "firejail"])
def test_a_sandboxed_git_pushes_through_the_broker_and_the_credential_is_nowhere_inside(
    backend, tmp_path, monkeypatch
):
    from omnikernel.sandbox.launch import self_test

    if problem := self_test(backend):
        pytest.fail(f"{problem}; install it with: apt-get install -y {backend}")
    monkeypatch.setenv("OMK_TEST_GH_TOKEN", TOKEN)  # the kernel's environment, not the agent's
    root = tmp_path / "server"
    root.mkdir()
    with GitStandIn(root, "github.com", "x-access-token", TOKEN) as standin:
        standin.bare(REPO)
        script = (
            "set -e\n"
            f"git clone -q https://github.com/{REPO} app\n"
            "cd app && git checkout -q -b agent/sandboxed && echo x > f && git add f\n"
            "git commit -q -m f && git push -q origin agent/sandboxed && cd ..\n"
            "echo PUSHED\n"
            "grep -c 'Omnigent session CA' /etc/ssl/certs/ca-certificates.crt || true\n"
            "set +e\n" + DUMP
        )
        code, out, asked = sandboxed(backend, tmp_path, standin, {}, script)
        assert "PUSHED" in out, out[-3000:]
        assert standin.ref(REPO, "refs/heads/agent/sandboxed")
        assert [u.kind for u in asked[0][2].updates] == ["create"]
        assert leaks(out) == [], "the credential is visible inside the sandbox"
        import resource

        assert resource.getrlimit(resource.RLIMIT_CORE)[0] == 0  # the kernel dumps no core
        assert "SSL_CERT_FILE=" in out and "GIT_SSL_CAINFO=" in out
        if backend == "bwrap":  # the session CA's bundle is shown over the system one
            assert out.split("PUSHED", 1)[1].split()[0] == "1"

        # The same dump does find a credential that is inside (the attack the broker removes:
        # giving the agent the token): the check above can fail.
        code, out, _ = sandboxed(backend, tmp_path, standin, {"GH_TOKEN": TOKEN}, "set +e\n" + DUMP)
        assert leaks(out)


@pytest.mark.sandbox
def test_a_sandboxed_force_push_of_main_is_refused_by_the_broker(tmp_path, monkeypatch):
    from omnikernel.sandbox.launch import self_test

    backend = next((n for n in ("bwrap", "firejail") if not self_test(n)), None)
    if backend is None:
        pytest.fail("no sandbox works here: apt-get install -y bubblewrap firejail")
    monkeypatch.setenv("OMK_TEST_GH_TOKEN", TOKEN)
    root = tmp_path / "server"
    root.mkdir()
    with GitStandIn(root, "github.com", "x-access-token", TOKEN) as standin:
        standin.bare(REPO)
        before = standin.ref(REPO, "refs/heads/main")
        script = (
            f"git clone -q https://github.com/{REPO} app && cd app\n"
            "git checkout -q --orphan rewrite && echo y > g && git add g && git commit -q -m g\n"
            "git push -f origin rewrite:main; echo EXIT=$?\n"
        )
        code, out, asked = sandboxed(backend, tmp_path, standin, {}, script)
        assert "EXIT=1" in out, out
        assert "[remote rejected]" in out and "default branch 'main'" in out
        assert standin.ref(REPO, "refs/heads/main") == before


def test_the_scrub_blanks_a_credential_split_across_pieces_and_keeps_lengths():
    from omnikernel.sandbox.broker import _Scrub

    body = f"before {TOKEN} middle x-access-token:{TOKEN} after".encode()
    for size in (1, 3, 7, 64, len(body)):
        scrub = _Scrub(Credential("github.com", "x-access-token", TOKEN, "test"))
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        out = b"".join(scrub.feed(p) for p in pieces) + scrub.flush()
        assert len(out) == len(body)
        assert TOKEN.encode() not in out and out.startswith(b"before ") and out.endswith(b"after")
