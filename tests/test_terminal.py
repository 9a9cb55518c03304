"""The session from a terminal: `jupyter console --kernel omnikernel` driven in tmux shows the
whole answer (it ignores display updates, so the text must come as a stream), and
`omnikernel attach` follows a running turn from the session store."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid

import pytest

from omnikernel.testing import FakeModelServer, Scenario

from .conftest import REPO, kernel_env, require_claude

WORDS = [f"w{n:02d}" for n in range(60)]
SCENARIO = {
    "rules": [
        {
            "match": "long answer",
            "steps": [{"text": " ".join(WORDS) + " THE-END", "chunk_delay": 0.03}],
        },
        {
            "match": "slow answer",
            "steps": [{"text": " ".join(WORDS) + " THE-END", "chunk_delay": 0.25}],
        },  # fmt: skip
        {"match": "hello", "steps": [{"text": "Hello from the agent."}]},
    ]
}


@pytest.fixture
def model():
    require_claude()
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as server:
        yield server


def require_tmux() -> str:
    path = shutil.which("tmux")
    if not path:
        pytest.fail("tmux is not installed: apt-get install -y --no-install-recommends tmux")
    return path


def test_console_shows_the_whole_answer(model, tmp_path, workdir):
    tmux = require_tmux()
    env = kernel_env(
        tmp_path,
        ANTHROPIC_BASE_URL=model.base_url,
        ANTHROPIC_API_KEY="test-key",
        PYTHONPATH=str(REPO),
        TERM="xterm",
    )
    name = f"omnikernel-console-{uuid.uuid4().hex[:8]}"
    console = [
        sys.executable,
        "-m",
        "jupyter_console",
        "--kernel",
        "omnikernel",
        "--no-confirm-exit",
    ]
    command = "exec env -i " + shlex.join([f"{k}={v}" for k, v in env.items()] + console)
    subprocess.run(
        [
            tmux,
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "200",
            "-y",
            "60",
            "-c",
            str(workdir),
            command,
        ],
        check=True,
    )

    def screen() -> str:
        return subprocess.run(
            [tmux, "capture-pane", "-p", "-J", "-S", "-3000", "-t", name],
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    def wait_for(text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (shown := screen()):
                return shown
            time.sleep(0.3)
        raise AssertionError(f"{text!r} never appeared in the console:\n{screen()}")

    try:
        wait_for("In [1]", 60)
        subprocess.run(
            [tmux, "send-keys", "-t", name, "Please give the long answer", "Enter"], check=True
        )
        shown = wait_for("In [2]", 120)
        answer = " ".join(WORDS) + " THE-END"
        assert answer in " ".join(shown.split()), shown  # every word, in order
        assert "── claude" in shown  # the footer, a rich display, shows too
        assert shown.index("THE-END") < shown.index("── claude")
        subprocess.run([tmux, "send-keys", "-t", name, "C-d"], check=True)
    finally:
        subprocess.run([tmux, "kill-session", "-t", name], check=False, capture_output=True)


def test_attach_follows_a_running_turn(model, workdir, start_kernel, tmp_path):
    kernel = start_kernel(workdir, ANTHROPIC_BASE_URL=model.base_url, ANTHROPIC_API_KEY="k")
    assert kernel.execute("hello").status == "ok"  # the session exists in the store
    env = kernel_env(tmp_path, PYTHONPATH=str(REPO))
    attach = subprocess.Popen(
        [sys.executable, "-m", "omnikernel.cli.attach"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    # Character by character: the answer is one line, and it must show before it ends.
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: attach.stdout.read(1), "")))
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while "Hello from the agent." not in "".join(seen):
            assert time.monotonic() < deadline, ("stored events never shown", seen, attach.poll())
            time.sleep(0.1)
        msg_id = kernel.kc.execute("Now the slow answer please")
        # While the cell still runs, the terminal already shows part of its answer.
        deadline = time.monotonic() + 60
        while "w10" not in "".join(seen).split("Now the slow answer")[-1]:
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
        assert "THE-END" not in "".join(seen).split("Now the slow answer")[-1]  # still running
        result = kernel.collect(msg_id)
        assert "THE-END" in result.text
        deadline = time.monotonic() + 10
        while "── claude" not in "".join(seen).split("slow answer")[-1]:
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
    finally:
        attach.terminate()
        attach.wait(10)
        reader.join(10)
    out = "".join(seen)
    assert out.startswith("Following session session-")
    assert "━━ turn 1 · claude ━━\n> hello" in out
    assert "━━ turn 2 · claude ━━\n> Now the slow answer please" in out
    assert " ".join(WORDS) + " THE-END" in out
