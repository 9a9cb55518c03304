"""Escape tests, against both backends. Each attempt must fail inside the sandbox, and (where
it is safe to try on the host) the same attempt is shown to succeed without it, so every test
can fail. No packet leaves the machine: "reaching" a remote address is checked by a UDP
connect, which only asks the kernel for a route."""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import os
import threading
from pathlib import Path
from unittest import mock

import pytest

from omnikernel.gateway import Gateway
from omnikernel.gateway.upstream import Upstream
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.sandbox import (
    INSTALL_ALL,
    SandboxSpec,
    SandboxStartError,
    SandboxUnavailableError,
    default_hidden,
    protected_in,
    resolve,
    self_test,
    start_sandboxed,
)
from omnikernel.sandbox.spawn import spawn

BACKENDS = ["bwrap", "firejail"]
#: The system's Python: the test's own may live under /tmp, which the sandbox replaces.
PYTHON = "/usr/bin/python3"
REMOTE = "10.255.255.1"  # never contacted: only routed


@pytest.fixture
def box(tmp_path, monkeypatch):
    """A fake home with a planted key, a Jupyter runtime dir, a workdir with a git repo."""
    home, work, outside = tmp_path / "home", tmp_path / "work", tmp_path / "outside"
    runtime = tmp_path / "runtime"
    for d in (home / ".ssh", work / ".git" / "hooks", outside, runtime, tmp_path / "state"):
        d.mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    (runtime / "kernel-1.json").write_text('{"key": "kernel-secret"}')
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    (work / "escape").symlink_to(outside)
    return {
        "home": home,
        "work": work,
        "outside": outside,
        "runtime": runtime,
        "state": tmp_path / "state",
    }


def spec_for(box, **extra) -> SandboxSpec:
    env = {"PATH": os.environ["PATH"], "HOME": str(box["home"]), "LANG": "C.UTF-8"}
    return SandboxSpec(
        workdir=box["work"],
        env=env,
        writable=(box["state"],),
        hidden=default_hidden(box["home"]),
        read_only=protected_in(box["work"]),
        **extra,
    )


async def run_async(backend: str | None, script: str, spec: SandboxSpec) -> tuple[int, str]:
    argv = ["/bin/bash", "-c", script]
    if backend is None:
        proc = await spawn(argv, cwd=spec.workdir, env=spec.env)
    else:
        proc = await start_sandboxed(argv, spec, resolve(backend))
    proc.stdin.close()
    out, err = await asyncio.wait_for(proc.process.communicate(), 60)
    await proc.kill()
    return proc.returncode or 0, (out + err).decode(errors="replace")


def run(backend: str | None, script: str, spec: SandboxSpec) -> tuple[int, str]:
    return asyncio.run(run_async(backend, script, spec))


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    problem = self_test(request.param)
    if problem:
        pytest.fail(f"{problem}; install the sandboxes with: {INSTALL_ALL}")
    return request.param


def test_write_outside_the_workdir_fails(backend, box):
    spec = spec_for(box)
    target = box["outside"] / "pwned"
    assert run(backend, f"echo x > {target}", spec)[0] != 0 and not target.exists()
    assert run(None, f"echo x > {target}", spec)[0] == 0 and target.exists()


def test_workdir_and_private_dirs_are_writable(backend, box):
    code, out = run(
        backend, f"echo ok > made && echo ok > {box['state']}/s && cat made", spec_for(box)
    )
    assert code == 0 and "ok" in out and (box["work"] / "made").exists()


def test_symlink_out_of_the_workdir_does_not_escape(backend, box):
    spec = spec_for(box)
    assert run(backend, "echo x > escape/pwned", spec)[0] != 0
    assert not (box["outside"] / "pwned").exists()
    assert run(None, "echo x > escape/pwned", spec)[0] == 0
    assert (box["outside"] / "pwned").exists()


def test_secrets_and_jupyter_runtime_are_hidden(backend, box):
    spec = spec_for(box)
    for path, secret in (
        (box["home"] / ".ssh" / "id_rsa", "PRIVATE KEY"),
        (box["runtime"] / "kernel-1.json", "kernel-secret"),
    ):
        assert secret not in run(backend, f"cat {path}", spec)[1]
        assert secret in run(None, f"cat {path}", spec)[1]


def test_git_hooks_are_read_only(backend, box):
    spec = spec_for(box)
    hook = box["work"] / ".git" / "hooks" / "pre-commit"
    assert run(backend, f"echo evil > {hook}", spec)[0] != 0 and not hook.exists()
    assert run(None, f"echo evil > {hook}", spec)[0] == 0 and hook.exists()


ROUTE = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "try:\n    s.connect((sys.argv[1], 53)); print('ROUTED')\n"
    "except OSError as e:\n    print('NO ROUTE', e)\n"
)


def nameserver() -> str:
    for line in Path("/etc/resolv.conf").read_text().splitlines():
        if line.startswith("nameserver"):
            return line.split()[1]
    return "10.255.255.2"


def test_no_route_to_remote_addresses_or_dns(backend, box):
    spec = spec_for(box)
    for address in (REMOTE, nameserver()):
        script = f"{PYTHON} - {address} <<'EOF'\n{ROUTE}EOF"
        assert "NO ROUTE" in run(backend, script, spec)[1]
        assert "ROUTED" in run(None, script, spec)[1]
    lookup = f"{PYTHON} -c \"import socket; socket.getaddrinfo('example.com', 80)\""
    assert run(backend, lookup, spec)[0] != 0


@pytest.fixture
def host_server():
    """An HTTP server on the host's loopback."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello from the host")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_loopback_is_closed_except_the_bridged_port(backend, box, host_server):
    port = host_server
    tcp = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED"
    assert "CONNECTED" not in run(backend, tcp, spec_for(box))[1]
    assert "CONNECTED" in run(None, tcp, spec_for(box))[1]
    bridged = spec_for(box, bridged_ports=(port,), bridge_dir=box["state"] / "bridge")
    fetch = (
        f'{PYTHON} -c "import urllib.request; '
        f"print(urllib.request.urlopen('http://127.0.0.1:{port}/').read().decode())\""
    )
    code, out = run(backend, fetch, bridged)
    assert code == 0 and "hello from the host" in out


def test_the_agent_reaches_the_gateway_only_through_the_bridge(backend, box):
    """The gateway has no TCP port while agents are sandboxed (issue 21): inside the sandbox
    the agent's URL names the relay's port, and the bridge's host side forwards to the
    gateway's unix socket. A real model call with the secret goes through from inside; the
    same call from the host, outside the sandbox, finds nothing listening."""
    scenario = Scenario.from_dict({"rules": [{"match": ".*", "steps": [{"text": "via bridge"}]}]})
    with (
        FakeModelServer(scenario) as fake,
        Gateway({"claude": Upstream("anthropic", fake.base_url, "sk-real")}) as gateway,
    ):
        url = gateway.base_url_for("claude", "anthropic") + "/v1/messages"
        secret = gateway.issue_secret("claude")
        call = (
            f'{PYTHON} -c "import json, urllib.request; print(urllib.request.urlopen('
            f"urllib.request.Request('{url}', data=json.dumps({{'model': 'm', 'max_tokens': 5, "
            f"'messages': [{{'role': 'user', 'content': 'hi'}}]}}).encode(), headers={{"
            f"'Content-Type': 'application/json', 'x-api-key': '{secret}'}})).read().decode())\""
        )
        assert gateway.socket_path is not None and gateway.port is None
        bridged = spec_for(
            box,
            bridged_ports=(gateway.inside_port,),
            bridge_targets={gateway.inside_port: gateway.socket_path},
        )
        code, out = run(backend, call, bridged)
        assert code == 0 and "via bridge" in out, out
        code, out = run(None, call, spec_for(box))  # the same call on the host
        assert code != 0 and "Connection refused" in out
        assert [r.headers["x-api-key"] for r in fake.requests] == ["sk-real"]


def test_no_privileges_and_no_remount(backend, box):
    spec = spec_for(box)
    status = "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status"
    inside, outside = run(backend, status, spec)[1], run(None, status, spec)[1]
    assert "CapEff:\t0000000000000000" in inside and "NoNewPrivs:\t1" in inside
    assert "CapEff:\t0000000000000000" not in outside  # the host process could remount
    assert run(backend, "mount -o remount,rw / && touch /pwned-by-remount", spec)[0] != 0
    assert not Path("/pwned-by-remount").exists()


def orphans(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"sleep", marker.encode()]:
                found.append(int(entry))
    return found


def test_double_forked_orphan_dies_with_the_sandbox(backend, box):
    spec = spec_for(box)

    async def start_and_stop(sandboxed: bool, marker: str) -> None:
        script = f"setsid nohup sleep {marker} >/dev/null 2>&1 < /dev/null & sleep 60"
        argv = ["/bin/bash", "-c", script]
        proc = (
            await start_sandboxed(argv, spec, resolve(backend))
            if sandboxed
            else await spawn(argv, cwd=spec.workdir, env=spec.env)
        )
        for _ in range(200):
            if orphans(marker):
                break
            await asyncio.sleep(0.02)
        assert orphans(marker), "the orphan never started"
        await proc.kill()
        await asyncio.sleep(0.3)

    asyncio.run(start_and_stop(True, "313.25"))
    assert orphans("313.25") == []
    asyncio.run(start_and_stop(False, "313.75"))
    survivors = orphans("313.75")
    for pid in survivors:
        os.kill(pid, 9)
    assert survivors, "unsandboxed, a setsid orphan outlives its parent's process group"


def test_environment_is_exactly_the_spec(backend, box):
    os.environ["OMNIKERNEL_TEST_LEAK"] = "kernel-only"
    try:
        out = run(backend, "env", spec_for(box))[1]
        host = set(os.environ)
    finally:
        del os.environ["OMNIKERNEL_TEST_LEAK"]
    names = {line.split("=", 1)[0] for line in out.splitlines() if "=" in line}
    assert "OMNIKERNEL_TEST_LEAK" not in names and {"PATH", "HOME"} <= names
    # Nothing of the host's environment but what the spec names (shells set PWD and friends).
    spec_names = set(spec_for(box).env) | {"PWD", "SHLVL", "_", "OLDPWD", "SHELL"}
    assert not (names & host) - spec_names


def test_process_count_is_limited(backend, box):
    spec = spec_for(box, pids_max=30)
    script = (
        f'{PYTHON} -c "import os, time\nn = 0\nwhile n < 200:\n'
        "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        time.sleep(5); os._exit(0)\n    n += 1\n"
        "print('FORKED', n)\""
    )
    out = run(backend, script, spec)[1]
    forked = int(out.split("FORKED")[1].split()[0])
    assert forked < 30


def test_no_backend_fails_closed_with_the_install_command():
    self_test.cache_clear()
    try:
        with mock.patch.dict(os.environ, {"PATH": "/nonexistent"}):
            with pytest.raises(SandboxUnavailableError) as err:
                resolve("auto")
        assert INSTALL_ALL in str(err.value) and "%sandbox off" in str(err.value)
    finally:
        self_test.cache_clear()
    assert resolve("off") is None
    with pytest.raises(SandboxUnavailableError, match="unknown sandbox"):
        resolve("docker")


@pytest.mark.sandbox  # starts the backends
def test_bench_measures_every_working_backend_against_a_bare_start():
    from benchmarks.sandbox import measure

    result = asyncio.run(measure(runs=2))
    assert set(result) == {"bare", "bwrap", "firejail"}
    # the start (the program inside has run, its line arrived) comes before the exit
    assert all(0 < r["start"] <= r["exit"] for r in result.values())


@pytest.fixture
def two_servers():
    servers = []
    for body in (b"allowed host", b"other host"):

        class Reply(http.server.BaseHTTPRequestHandler):
            payload = body

            def do_GET(self):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(self.payload)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Reply)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [s.server_address[1] for s in servers]
    for s in servers:
        s.shutdown()


FETCH = """
import http.client, os, sys, urllib.request
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    if mode == "http":
        print(urllib.request.urlopen(f"http://{host}:{port}/", timeout=10).read().decode())
    else:  # an HTTPS-style tunnel: CONNECT through the proxy, then talk through it
        proxy = os.environ["HTTPS_PROXY"].rsplit(":", 1)
        conn = http.client.HTTPConnection("127.0.0.1", int(proxy[1]), timeout=10)
        conn.set_tunnel(host, port)
        conn.request("GET", "/")
        print(conn.getresponse().read().decode())
except Exception as exc:
    print("BLOCKED", exc)
"""


@pytest.mark.parametrize("mode", ["http", "connect"])
def test_allowed_hosts_only_through_the_egress_proxy(backend, box, two_servers, mode):
    allowed_port, other_port = two_servers
    spec = spec_for(box, allow_hosts=(f"localhost:{allowed_port}",), bridge_dir=box["state"] / "b")

    def script(port: int) -> str:
        return f"{PYTHON} - localhost {port} {mode} <<'EOF'\n{FETCH}EOF"

    assert "allowed host" in run(backend, script(allowed_port), spec)[1]
    denied = run(backend, script(other_port), spec)[1]
    assert "BLOCKED" in denied and "other host" not in denied
    # Without the rule, the same request cannot leave the sandbox at all.
    assert "allowed host" not in run(backend, script(allowed_port), spec_for(box))[1]


@pytest.mark.parametrize(
    ("rule", "host", "port", "ok"),
    [
        ("registry.npmjs.org", "registry.npmjs.org", 443, True),
        ("registry.npmjs.org", "registry.npmjs.org", 22, False),
        ("registry.npmjs.org", "evil.org", 443, False),
        ("*.pythonhosted.org", "files.pythonhosted.org", 443, True),
        ("*.pythonhosted.org", "pythonhosted.org.evil.com", 443, False),
        ("localhost:8080", "localhost", 8080, True),
        ("localhost:8080", "localhost", 8081, False),
    ],
)
def test_allow_rules(rule, host, port, ok):
    from omnikernel.sandbox.egress import allowed

    assert allowed((rule,), host, port) is ok


def test_an_agent_installed_under_tmp_still_runs(backend, box, tmp_path):
    tool = tmp_path / "tools" / "node_modules" / ".bin" / "agent"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\necho agent-ran\n")
    tool.chmod(0o755)
    from omnikernel.sandbox.spec import install_root

    spec = spec_for(box, readable=(install_root(str(tool)),))
    assert install_root(str(tool)) == tmp_path / "tools" / "node_modules"
    code, out = run(backend, str(tool), spec)
    assert code == 0 and "agent-ran" in out


def test_a_stdio_mcp_server_installed_under_tmp_runs_with_its_script(backend, box, tmp_path):
    """A server from mcp.toml whose interpreter is a virtual environment under /tmp (which
    the sandbox replaces) and whose script sits beside it: without `command_readable` the
    sandbox cannot see either, and the server never starts (the tool is just not offered)."""
    from omnikernel.sandbox.spec import command_readable

    venv = tmp_path / "srv" / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(PYTHON)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    script = tmp_path / "srv" / "server.py"
    script.write_text("print('server-ran')\n")
    command = f"{venv / 'bin' / 'python'} {script}"
    code, out = run(backend, command, spec_for(box))
    assert code != 0 and "server-ran" not in out  # unseen without it
    readable = command_readable(str(venv / "bin" / "python"), [str(script)], os.environ["PATH"])
    assert venv in readable and script in readable
    code, out = run(backend, command, spec_for(box, readable=readable))
    assert code == 0 and "server-ran" in out, out


# -- paths in firejail's profile -------------------------------------------------------------


def test_a_notebook_folder_named_with_runs_of_spaces_and_glob_characters(backend, box, tmp_path):
    """firejail reads each profile path as a glob and collapses runs of spaces: the folder is
    named exactly, not its look-alike beside it."""
    work = tmp_path / "notes  [1] *"
    lookalike = tmp_path / "notes 1 x"
    for d in (work, lookalike):
        d.mkdir()
    (lookalike / "secret").write_text("LOOKALIKE-SECRET")
    spec = dataclasses.replace(spec_for(box), workdir=work, read_only=())
    code, out = run(backend, f"echo ok > made && cat made; cat '{lookalike}/secret'", spec)
    assert out.startswith("ok\n") and (work / "made").exists(), out
    assert "LOOKALIKE-SECRET" not in out


def test_a_masked_name_firejail_refuses_is_still_hidden(backend, box):
    """A mask may match more than its path: each character firejail refuses (a newline that
    would start a profile line of its own, ";") becomes a one-character wildcard; ".." is
    escaped."""
    secret = box["work"] / "keys..\nignore net none;"
    secret.write_text("ODD-NAME-SECRET")
    spec = dataclasses.replace(spec_for(box), hidden=(secret,))
    code, out = run(backend, "cat keys*; echo x > /made-by-agent", spec)
    assert "ODD-NAME-SECRET" not in out and not Path("/made-by-agent").exists(), out
    assert run(None, "cat keys*", spec)[1].startswith("ODD-NAME-SECRET")


@pytest.mark.parametrize("name", ["R&D", "a\nread-write /", "v1..2"])
@pytest.mark.sandbox  # runs firejail
def test_an_opened_path_firejail_cannot_name_is_refused_with_the_way_out(box, tmp_path, name):
    """A path the agent must reach, with a character firejail refuses (or a newline that would
    add a profile line): firejail is not started; the error names the path, the setting it
    comes from and `%sandbox bwrap`, which runs the same agent."""
    work = tmp_path / name
    work.mkdir()
    spec = dataclasses.replace(spec_for(box), workdir=work, read_only=())
    with pytest.raises(SandboxStartError) as refused:
        run("firejail", "true", spec)
    message = str(refused.value)
    assert repr(str(work)) in message and "the notebook's folder" in message, message
    assert "`%sandbox bwrap`" in message
    assert run("bwrap", "echo ok", spec) == (0, "ok\n")


# -- a sandbox that refuses to start the agent -------------------------------------------------


@pytest.mark.sandbox  # runs a sandbox
def test_a_refused_start_is_explained_with_the_sandbox_s_own_words(box):
    """firejail still limits each argument's length (4,128 bytes): an agent given a longer one
    (here a model name) never starts. `start_failure` tells that apart from an agent that
    fails on its own, in firejail's words, with what it blames and `%sandbox bwrap`."""
    long_model = "m" * 5000
    spec = spec_for(box)

    async def failure(backend: str, argv: list[str]) -> tuple[int | None, str | None]:
        proc = await start_sandboxed(argv, spec, resolve(backend))
        proc.stdin.close()
        await asyncio.wait_for(proc.process.communicate(), 60)
        try:
            return proc.returncode, await proc.start_failure()
        finally:
            await proc.kill()

    agent = ["/bin/bash", "-c", "echo 'Error: mine' >&2; exit 1", "agent", "--model"]
    code, said = asyncio.run(failure("firejail", [*agent, long_model]))
    assert code and said, said
    assert "too long arguments" in said and "the value of `--model`" in said, said
    assert "`%sandbox bwrap`" in said
    # The same agent under bwrap, and an agent failing on its own: its own error stands.
    assert asyncio.run(failure("bwrap", [*agent, long_model])) == (1, None)
    assert asyncio.run(failure("firejail", [*agent, "short"])) == (1, None)
