"""Claude Code inside each sandbox backend, driven by the kernel: the agent works in the
notebook's folder, cannot write outside it or read Jupyter's runtime dir, reaches its model only
through the gateway; with no backend the kernel refuses; `%sandbox off` is loud."""

from __future__ import annotations

import pytest

from omnikernel.rehearsal import FakeModelServer, Scenario

from .conftest import NODE_BIN, require_claude
from .test_kernel_control import run_and_answer
from .test_kernel_gateway import (
    agent_environment,
    jupyter_ports,
    post_with_secret,
    tcp_listeners,
)


def scenario(outside: str, secret: str) -> dict:
    shell = lambda command: {"tool_calls": [{"action": "shell", "command": command}]}
    return {
        "rules": [
            {
                "match": "inside",
                "steps": [
                    {"text": "Writing.", **shell("echo inside > here.txt")},
                    {"text": "Wrote here.txt."},
                ],
            },
            {
                "match": "escape",
                "steps": [
                    {"text": "Trying.", **shell(f"echo x > {outside}/pwned")},
                    {"text": "Tried."},
                ],
            },
            {
                "match": "secret",
                "steps": [{"text": "Reading.", **shell(f"cat {secret}")}, {"text": "Read."}],
            },
        ]
    }


@pytest.fixture
def box(tmp_path):
    require_claude()
    outside = tmp_path / "outside"
    runtime = tmp_path / "runtime"
    outside.mkdir()
    runtime.mkdir()
    secret = runtime / "kernel-42.json"
    secret.write_text('{"key": "runtime-secret-value"}')
    server = FakeModelServer(Scenario.from_dict(scenario(str(outside), str(secret))))
    server.start_in_thread()
    yield {"model": server, "outside": outside, "runtime": runtime, "secret": secret}
    server.stop_thread()


def env_for(box, **extra: str) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": box["model"].base_url,
        "ANTHROPIC_API_KEY": "k",
        "OMNIKERNEL_AUTO_APPROVE": "1",
        "JUPYTER_RUNTIME_DIR": str(box["runtime"]),
        **extra,
    }


@pytest.mark.parametrize("backend", ["bwrap", "firejail"])
def test_agent_runs_sandboxed_and_cannot_escape(backend, box, workdir, start_kernel):
    kernel = start_kernel(workdir, **env_for(box, OMNIKERNEL_SANDBOX=backend))
    kernels_own = jupyter_ports(kernel)
    inside = kernel.execute("Write a file inside the folder.")
    assert inside.status == "ok", inside.text
    assert (workdir / "here.txt").read_text() == "inside\n"
    assert f"sandbox: {backend}" in inside.text
    # The agent reached the gateway through the bridge to its unix socket: on the host the
    # kernel listens on no TCP port but Jupyter's, and its URL's port is the sandbox's alone.
    assert tcp_listeners(kernel.km.provisioner.pid) == kernels_own
    agent = agent_environment(kernel)
    assert post_with_secret(agent["ANTHROPIC_BASE_URL"], agent["ANTHROPIC_API_KEY"]) is None

    escape = kernel.execute("Now try to escape.")
    assert not (box["outside"] / "pwned").exists()
    assert "✗ error" in escape.text  # the tool failed inside the sandbox

    secret = kernel.execute("Read the secret.")
    assert "runtime-secret-value" not in secret.text

    table = kernel.execute("%agents")
    assert backend in table.text


def test_sandbox_off_is_explicit_and_loud(box, workdir, start_kernel):
    kernel = start_kernel(workdir, **env_for(box))
    pid, kernels_own = kernel.km.provisioner.pid, jupyter_ports(kernel)
    assert kernel.execute("Write a file inside the folder.").status == "ok"
    sandboxed = agent_environment(kernel)["ANTHROPIC_BASE_URL"]
    assert tcp_listeners(pid) == kernels_own  # sandboxed: the gateway has no TCP port
    off = kernel.execute("%sandbox off")
    assert "SANDBOX OFF" in off.text
    assert tcp_listeners(pid) == kernels_own  # not before an agent starts unsandboxed
    result = kernel.execute("Now try to escape.")
    assert "SANDBOX OFF" in result.text  # the notice and the footer
    assert (box["outside"] / "pwned").exists()  # which is what the sandbox prevents
    # The unsandboxed CLI has no bridge: the gateway opened a loopback TCP port for it, the one
    # its URL names, where its secret works (as any local process holding it could now).
    agent = agent_environment(kernel)
    url, secret = agent["ANTHROPIC_BASE_URL"], agent["ANTHROPIC_API_KEY"]
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert url != sandboxed and tcp_listeners(pid) == kernels_own | {port}
    assert post_with_secret(url, secret) == 200
    back = kernel.execute("%sandbox auto")
    assert "Sandbox: " in back.text


def test_no_working_backend_refuses_to_start_the_agent(box, workdir, start_kernel):
    # Neither bwrap nor firejail on PATH: only the agent CLI's own folder and the basics.
    kernel = start_kernel(workdir, PATH=f"{NODE_BIN}:/nonexistent", **env_for(box))
    result = kernel.execute("Write a file inside the folder.")
    assert result.status == "error"
    assert "No working sandbox" in result.text
    assert "apt-get install -y --no-install-recommends bubblewrap firejail socat" in result.text
    assert not (workdir / "here.txt").exists()
    assert kernel.execute("%%python\nprint(1 + 1)").status == "ok"


def test_allow_rules_open_one_host_for_the_agent(box, workdir, start_kernel, tmp_path):
    import http.server
    import threading

    class Registry(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"package-index-ok")

        def log_message(self, *args):
            pass

    registry = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=registry.serve_forever, daemon=True).start()
    port = registry.server_address[1]
    box["model"].scenario.rules.insert(
        0,
        Scenario.from_dict(
            {
                "rules": [
                    {
                        "match": "registry",
                        "steps": [
                            {
                                "text": "Fetching.",
                                "tool_calls": [
                                    {
                                        "action": "shell",
                                        "command": f"python3 -c \"import urllib.request; print(urllib.request.urlopen('http://localhost:{port}/').read().decode())\"",
                                    }
                                ],
                            },
                            {"text": "Fetched."},
                        ],
                    }
                ]
            }
        ).rules[0],
    )
    try:
        kernel = start_kernel(workdir, **env_for(box))
        # A host nothing allows asks (auto-approval does not answer it); denied, it stays shut.
        closed = run_and_answer(kernel, "Fetch from the registry.", ["Deny"])
        assert f"wants to reach localhost:{port}" in closed.text, closed.text
        assert "package-index-ok" not in closed.text
        assert "The sandbox refused" in closed.text
        opened = kernel.execute(f"%sandbox allow localhost:{port}")
        assert f"localhost:{port}" in opened.text
        fetched = kernel.execute("Fetch from the registry again.")
        assert "package-index-ok" in fetched.text, fetched.text
        assert kernel.execute("%sandbox allow nonsense/path").status == "error"
    finally:
        registry.shutdown()


@pytest.mark.parametrize("backend", ["bwrap", "firejail"])
def test_a_notebook_folder_that_is_the_home_is_as_safe_as_any(backend, tmp_path, start_kernel):
    """`jupyter lab` started in ~: the real claude CLI, driven through the kernel, tries to
    plant a shell start-up file and a global git config and to read a login and the store."""
    import subprocess

    require_claude()
    home = tmp_path / "home"
    jupyter_data = home / ".local/share/jupyter"
    store = jupyter_data / "omnikernel/sessions.sqlite3"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude/.credentials.json").write_text("CLAUDE-LOGIN-SECRET")
    marker = tmp_path / "PWNED"
    shell = lambda command: {"tool_calls": [{"action": "shell", "command": command}]}
    steps = {
        "bashrc": f"echo 'touch {marker}' >> {home}/.bashrc",
        "gitconfig": f"git config --file {home}/.gitconfig core.fsmonitor 'touch {marker}; false'",
        "login": f"cat {home}/.claude/.credentials.json",
        "store": f"cat {store}",
    }
    rules = [
        {"match": name, "steps": [{"text": "Trying.", **shell(command)}, {"text": "Done."}]}
        for name, command in steps.items()
    ]
    server = FakeModelServer(Scenario.from_dict({"rules": rules}))
    server.start_in_thread()
    try:
        kernel = start_kernel(
            home,
            HOME=str(home),
            OMNIKERNEL_SANDBOX=backend,
            OMNIKERNEL_STORE=str(store),
            OMNIKERNEL_STATE_DIR=str(jupyter_data / "omnikernel/harness-state"),
            JUPYTER_RUNTIME_DIR=str(jupyter_data / "runtime"),
            ANTHROPIC_API_KEY="k",
            ANTHROPIC_BASE_URL=server.base_url,
            OMNIKERNEL_AUTO_APPROVE="1",
        )
        bashrc = kernel.execute("Plant the bashrc.")
        assert "The sandbox keeps `.bashrc` read-only" in bashrc.text, bashrc.text
        gitconfig = kernel.execute("Plant the gitconfig.")
        assert "The sandbox keeps `.gitconfig` read-only" in gitconfig.text, gitconfig.text
        assert "CLAUDE-LOGIN-SECRET" not in kernel.execute("Read the login.").text
        store_read = kernel.execute("Read the store.")
        # The store holds every prompt so far; read, the output would show the first one.
        assert store.exists() and "Plant the bashrc" not in store_read.text, store_read.text
    finally:
        server.stop_thread()
    host_env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    subprocess.run(["bash", "-ic", "true"], env=host_env, capture_output=True, timeout=30)
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], env=host_env, check=True)
    subprocess.run(["git", "status"], cwd=repo, env=host_env, capture_output=True, timeout=30)
    assert not marker.exists()


def test_sandbox_read_opens_one_folder_of_the_home(tmp_path, start_kernel):
    require_claude()
    home = tmp_path / "home"
    work = home / "project"
    data = home / "datasets"
    for d in (work, data):
        d.mkdir(parents=True)
    (data / "table.csv").write_text("DATASET-ROW")
    (home / ".env").write_text("HOME-DOTENV-SECRET")
    command = f"cat {data}/table.csv {home}/.env"
    rule = {
        "match": "dataset",
        "steps": [
            {"text": "Reading.", "tool_calls": [{"action": "shell", "command": command}]},
            {"text": "Read."},
        ],
    }
    server = FakeModelServer(Scenario.from_dict({"rules": [rule]}))
    server.start_in_thread()
    try:
        kernel = start_kernel(
            work,
            HOME=str(home),
            ANTHROPIC_API_KEY="k",
            ANTHROPIC_BASE_URL=server.base_url,
            OMNIKERNEL_AUTO_APPROVE="1",
        )
        closed = kernel.execute("Read the dataset.")
        assert "DATASET-ROW" not in closed.text
        opened = kernel.execute(f"%sandbox read {data}")
        assert str(data) in opened.text and opened.status == "ok"
        read = kernel.execute("Read the dataset again.")
        assert "DATASET-ROW" in read.text, read.text
        assert "HOME-DOTENV-SECRET" not in read.text
        missing = kernel.execute("%sandbox read ~/no-such-folder")
        assert missing.status == "error" and "does not exist" in missing.text
    finally:
        server.stop_thread()


def test_firejail_starts_beside_1000_sessions_and_explains_a_refused_start(
    box, tmp_path, start_kernel
):
    """Issue 28, through the kernel: a notebook folder that is the home, beside 1,000 other
    sessions' state dirs (firejail once got an argument per entry and refused past 128). Then
    a model name longer than firejail takes as an argument: the cell shows firejail's words,
    what they blame and `%sandbox bwrap`, not only "exited unexpectedly"."""
    home = tmp_path / "home"
    state = home / ".local/share/jupyter/omnikernel/harness-state"
    for i in range(1000):
        (state / f"s{i:04}").mkdir(parents=True)
    kernel = start_kernel(
        home,
        **env_for(
            box, HOME=str(home), OMNIKERNEL_SANDBOX="firejail", OMNIKERNEL_STATE_DIR=str(state)
        ),
    )
    inside = kernel.execute("Write a file inside the folder.")
    assert inside.status == "ok", inside.text
    assert (home / "here.txt").read_text() == "inside\n"
    assert kernel.execute(f"%agent claude --model {'m' * 5000}").status == "ok"
    refused = kernel.execute("Write a file inside the folder.")
    assert refused.status == "error", refused.text
    for words in (
        "its sandbox refused to start it",
        "too long arguments",
        "the value of `--model`",
        "`%sandbox bwrap`",
    ):
        assert words in refused.text, refused.text


def test_a_sandbox_change_before_the_first_turn_keeps_codex_working(workdir, start_kernel):
    """The warm start runs Codex before any prompt; `%sandbox allow` then restarts it in the new
    sandbox. Its thread had no turn (Codex keeps no rollout for it), so the restart starts a new
    thread instead of resuming one Codex refuses ("no rollout found for thread id")."""
    from .conftest import require_cli
    from .test_kernel_control import upstreams

    require_cli("codex")
    model = FakeModelServer(Scenario.from_dict({"rules": [{"match": "hello", "steps": [
        {"text": "Hello from the rehearsal."}]}]}))  # fmt: skip
    model.start_in_thread()
    try:
        kernel = start_kernel(workdir, **upstreams(model, OMNIKERNEL_HARNESS="codex"))
        kernel.execute("%sandbox allow example.com")
        cell = kernel.execute("hello", timeout=180)
        assert cell.status == "ok", cell.text
        assert "Hello from the rehearsal." in cell.text
    finally:
        model.stop_thread()
