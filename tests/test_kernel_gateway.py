"""The kernel's gateway end to end, with the real Claude Code CLI: spend in the notebook, the
budget cap mid-turn, a recorded notebook replayed offline, and the key kept out of the agent."""

from __future__ import annotations

import http.client
import json
import os
import sqlite3

import pytest

from omnikernel.testing import FakeModelServer, Scenario

from .conftest import require_claude, require_cli, shown_text
from .test_kernel_claude import closed_port, descendants

REAL_KEY = "sk-ant-real-key-never-in-the-agent-0042"
MODEL = "claude-sonnet-4-5"
SCENARIO = {
    "rules": [
        {
            "match": "create the notes file",
            "steps": [
                {"text": "Writing notes.", "usage": {"input_tokens": 5000, "output_tokens": 100},
                 "tool_calls": [{"action": "shell", "command": "echo replayed > notes.txt"}]},
                {"text": "Created notes.txt.", "usage": {"input_tokens": 5000, "output_tokens": 50}},
            ],
        },
        {"match": "epic", "steps": [{"text": "saga " * 3000, "chunk_delay": 0.005,
                                     "usage": {"input_tokens": 10, "output_tokens": 200_000}}]},
    ]
}  # fmt: skip


OUTSIDER_BODY = json.dumps({"model": MODEL, "max_tokens": 5,
                           "messages": [{"role": "user", "content": "spend the user's money"}]})  # fmt: skip


def tcp_listeners(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on: its sockets (inodes, from /proc/PID/fd) that
    /proc/PID/net/tcp and tcp6 list in state LISTEN (0A)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def jupyter_ports(kernel) -> set[int]:
    """The TCP ports a kernel listens on before any agent runs: its five ZeroMQ channels (its
    connection file's) and at most one more, ipykernel's own (its IOPub thread binds a pipe
    for forked processes' output on 127.0.0.1)."""
    info = kernel.km.get_connection_info()
    channels = {info[f"{name}_port"] for name in ("shell", "iopub", "stdin", "control", "hb")}
    ports = tcp_listeners(kernel.km.provisioner.pid)
    assert channels <= ports and len(ports - channels) <= 1, (ports, channels)
    return ports


def agent_environment(kernel) -> dict[str, str]:
    """The environment of the kernel's agent CLI (the process given a base URL)."""
    for pid in descendants(kernel.km.provisioner.pid):
        try:
            raw = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            continue
        env = dict(v.decode().split("=", 1) for v in raw.split(b"\0") if b"=" in v)
        if "ANTHROPIC_BASE_URL" in env:
            return env
    raise AssertionError("no agent process was seen")


def post_with_secret(base_url: str, secret: str) -> int | None:
    """A model call with the agent's own secret, from a process on the host outside any
    sandbox, to the port the agent's base URL names: its status, or None when nothing on the
    host listens there."""
    port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    outsider = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        outsider.request(
            "POST",
            "/h/claude/v1/messages",
            OUTSIDER_BODY,
            {
                "Host": f"127.0.0.1:{port}",
                "Content-Type": "application/json",
                "x-api-key": secret,
                "anthropic-version": "2023-06-01",
            },
        )
        return outsider.getresponse().status
    except ConnectionRefusedError:
        return None
    finally:
        outsider.close()


@pytest.fixture
def model():
    require_claude()
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as server:
        yield server


def env_for(model: FakeModelServer, **extra: str) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": REAL_KEY,
        "OMNIKERNEL_MODEL": MODEL,
        "OMNIKERNEL_AUTO_APPROVE": "1",
        **extra,
    }


def test_spend_table_and_key_kept_out_of_the_agent(model, workdir, start_kernel, tmp_path, capfd):
    kernel = start_kernel(workdir, **env_for(model))
    kernels_own = jupyter_ports(kernel)
    msg_id = kernel.kc.execute("Please create the notes file.")
    environs: list[bytes] = []

    def read_agent_environment(msg):
        if environs or "Writing notes" not in shown_text(msg):
            return
        for pid in descendants(kernel.km.provisioner.pid):
            try:
                environs.append(open(f"/proc/{pid}/environ", "rb").read())
            except OSError:
                pass

    result = kernel.collect(msg_id, on_output=read_agent_environment)
    assert result.status == "ok", result.text
    assert environs, "no agent process was seen"
    assert all(REAL_KEY.encode() not in env for env in environs)
    # The agent's key is its session's secret, and its base URL the gateway.
    agent_env = next(
        dict(v.split(b"=", 1) for v in env.split(b"\0") if b"=" in v)
        for env in environs
        if b"ANTHROPIC_API_KEY=" in env
    )
    secret = agent_env[b"ANTHROPIC_API_KEY"].decode()
    assert secret.startswith("omk-") and len(secret) >= 40
    assert all(r.headers.get("x-api-key") == REAL_KEY for r in model.requests if r.method == "POST")

    # An outsider on the machine who learned the secret (an agent printed its environment, a
    # shared session showed it) posts a model call with it to the port in the agent's URL.
    # Before issue 21 the gateway listened there on the host and answered 200, billed to this
    # session. Now that port exists only inside the agent's sandbox (the relay's), the gateway
    # serves a unix socket, and the kernel listens on no TCP port but Jupyter's own.
    seen = len(model.requests)
    status = post_with_secret(agent_env[b"ANTHROPIC_BASE_URL"].decode(), secret)
    assert status is None, f"an outsider holding the secret got {status} from the gateway"
    assert tcp_listeners(kernel.km.provisioner.pid) == kernels_own
    assert len(model.requests) == seen

    spend = kernel.execute("%spend")
    assert "claude" in spend.text and MODEL in spend.text and "Session total: $" in spend.text
    assert "10,000" in spend.text  # input tokens of the two scripted calls, metered on the wire
    store = tmp_path / "store" / "sessions.sqlite3"
    dump = "\n".join(str(row) for row in sqlite3.connect(store).execute("SELECT * FROM events"))
    assert REAL_KEY not in dump and secret not in dump
    assert "spend" in {row[0] for row in sqlite3.connect(store).execute("SELECT kind FROM events")}
    assert secret not in result.text + spend.text  # nor in a cell
    kernel.stop()
    logged = capfd.readouterr()  # the kernel's log goes to its stderr, which the test captures
    assert secret not in logged.out + logged.err and REAL_KEY not in logged.out + logged.err


def test_budget_stops_a_turn_mid_stream_and_can_be_raised(model, workdir, start_kernel):
    kernel = start_kernel(workdir, **env_for(model))
    assert "Budget $0.01" in kernel.execute("%budget 0.01").text
    result = kernel.execute("Tell me an epic.", timeout=120)
    assert result.status == "error"
    assert "budget" in result.text.lower() and "%budget" in result.text
    # The streamed text is one display updated in place (its fullest version counts), or, for
    # a client without cells like this one, a stream (all chunks count).
    streamed = "".join(m["content"]["text"] for m in result.outputs if m["msg_type"] == "stream")
    sagas = max(
        [m["content"].get("data", {}).get("text/plain", "").count("saga") for m in result.outputs]
        + [streamed.count("saga")]
    )
    assert 0 < sagas < 3000  # cut mid-way
    raised = kernel.execute("%budget 50")
    assert "Budget $50.00" in raised.text
    again = kernel.execute("Please create the notes file.")
    assert again.status == "ok", again.text


def test_recorded_notebook_replays_offline_with_the_same_actions(model, tmp_path, start_kernel):
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    cassette = tmp_path / "nb.cassette.jsonl"
    recorder = start_kernel(first_dir, **env_for(model))
    assert "Recording" in recorder.execute(f"%record {cassette}").text
    recorded = recorder.execute("Please create the notes file.")
    assert recorded.status == "ok", recorded.text
    assert (first_dir / "notes.txt").read_text() == "replayed\n"
    text = cassette.read_text()
    assert REAL_KEY not in text and "omnikernel-placeholder-key" not in text

    # No upstream at all now: a dead port, and the fake model is stopped.
    model.stop_thread()
    dead = f"http://127.0.0.1:{closed_port()}"
    player = start_kernel(
        second_dir,
        **env_for(model, ANTHROPIC_BASE_URL=dead, OMNIKERNEL_SESSION_ID="replay-session"),
    )
    assert "Replaying" in player.execute(f"%replay {cassette}").text
    replayed = player.execute("Please create the notes file.")
    assert replayed.status == "ok", replayed.text
    assert (second_dir / "notes.txt").read_text() == "replayed\n"  # the same tool call ran
    assert "▶ Bash: echo replayed > notes.txt" in replayed.text
    assert "$0.0000" in replayed.text  # a replay costs nothing
    mismatch = player.execute("Something that was never recorded.")
    assert mismatch.status == "error"
    assert "cassette" in mismatch.text


def test_stopping_the_kernel_stops_its_agents(model, workdir, start_kernel):
    kernel = start_kernel(workdir, **env_for(model))
    assert kernel.execute("Please create the notes file.").status == "ok"
    children = descendants(kernel.km.provisioner.pid)
    assert children, "the agent process should still be running between turns"
    kernel.stop()

    def alive(pid: int) -> bool:
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    assert not [pid for pid in children if alive(pid)]


def test_gemini_through_the_kernel_with_its_key_kept_out(workdir, start_kernel, tmp_path):
    """`%agent gemini` in a kernel configured the way Gemini CLI is (GEMINI_API_KEY,
    GOOGLE_GEMINI_BASE_URL): the agent gets the gateway and a session secret, the real key goes
    only upstream, the call is metered at Gemini prices, and `%agents` lists the new agents."""
    require_cli("gemini")
    real_key = "AIza-real-gemini-key-never-in-the-agent-0043"
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as model:
        kernel = start_kernel(
            workdir,
            GEMINI_API_KEY=real_key,
            GOOGLE_GEMINI_BASE_URL=model.base_url,
            OMNIKERNEL_AUTO_APPROVE="1",
        )
        agents = kernel.execute("%agents").text
        for name, version in (("gemini", "0.61.0"), ("qwen", "0.24.4"), ("opencode", "1.18.33")):
            row = next(line for line in agents.splitlines() if name in line.split())
            assert "yes" in row and version in row, row
        assert "Switched to gemini" in kernel.execute("%agent gemini").text
        msg_id = kernel.kc.execute("Please create the notes file.")
        environs: list[bytes] = []

        def read_agent_environment(msg):
            if environs or "Writing notes" not in shown_text(msg):
                return
            for pid in descendants(kernel.km.provisioner.pid):
                try:
                    environs.append(open(f"/proc/{pid}/environ", "rb").read())
                except OSError:
                    pass

        result = kernel.collect(msg_id, on_output=read_agent_environment)
        assert result.status == "ok", result.text
        assert (workdir / "notes.txt").read_text() == "replayed\n"
        assert "run_shell_command" in result.text
        assert environs and all(real_key.encode() not in env for env in environs)
        agent_env = next(
            dict(v.split(b"=", 1) for v in env.split(b"\0") if b"=" in v)
            for env in environs
            if b"GEMINI_API_KEY=" in env
        )
        assert agent_env[b"GEMINI_API_KEY"].startswith(b"omk-")
        assert b"/h/gemini" in agent_env[b"GOOGLE_GEMINI_BASE_URL"]
        posts = [r for r in model.requests if r.method == "POST"]
        assert posts and all(r.headers.get("x-goog-api-key") == real_key for r in posts)
        assert all(":streamGenerateContent" in r.path for r in posts)
        spend = kernel.execute("%spend").text
        assert "gemini" in spend and "gemini-2.5-flash" in spend and "Session total: $" in spend
        store = tmp_path / "store" / "sessions.sqlite3"
        dump = "\n".join(str(row) for row in sqlite3.connect(store).execute("SELECT * FROM events"))
        assert real_key not in dump
