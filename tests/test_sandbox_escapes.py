"""The escape suite: what an agent could take or plant, tried on both backends with the spec
every agent gets (`for_agent`), and each attempt also run without a sandbox, where it must get
through, so every test can fail. Planted files are judged by their delayed effect on the host:
`git status` running a planted fsmonitor, a new IPython kernel running a startup file,
`jupyter kernelspec list` listing a planted kernel, a shell running its start-up file.

The world is a fake home under the test's tmp dir (``$HOME`` points at it), holding agent
logins, other tools' keys, a shell history, other projects, Jupyter's runtime and data dirs with
the session store and another session's harness state, and a notebook folder with a git repo.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from omnikernel.proc.process import start_process
from omnikernel.sandbox import INSTALL_ALL, for_agent, resolve, self_test, start_sandboxed
from omnikernel.sandbox.rundir import RunDir, run_root, sweep
from omnikernel.sandbox.spec import PROTECTED, SandboxSpec, explain_refusal

SECRETS = {
    ".claude/.credentials.json": "CLAUDE-LOGIN-SECRET",
    ".codex/auth.json": "CODEX-LOGIN-SECRET",
    ".pi/agent/auth.json": "PI-LOGIN-SECRET",
    ".config/sometool/api_key": "TOOL-API-KEY-SECRET",
    ".bash_history": "HISTORY-SECRET",
    ".env": "HOME-DOTENV-SECRET",
    ".ssh/id_ed25519": "SSH-KEY-SECRET",
    "other-project/.env": "OTHER-PROJECT-SECRET",
    ".local/share/jupyter/runtime/kernel-1.json": "KERNEL-CONNECTION-SECRET",
    ".local/share/jupyter/omnikernel/sessions.sqlite3": "STORE-SECRET",
    ".local/share/jupyter/omnikernel/harness-state/other/claude/home/transcript.jsonl":
        "OTHER-SESSION-SECRET",
}  # fmt: skip

SANDBOXES = ["bwrap", "firejail"]


@pytest.fixture(params=[*SANDBOXES, "none"])
def backend(request) -> str:
    """Each attempt runs in both sandboxes and, to show it is a real attack, without one."""
    if request.param != "none" and (problem := self_test(request.param)):
        pytest.fail(f"{problem}; install the sandboxes with: {INSTALL_ALL}")
    return request.param


def git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def world(tmp_path, monkeypatch):
    home = tmp_path / "home"
    for relative, secret in SECRETS.items():
        (home / relative).parent.mkdir(parents=True, exist_ok=True)
        (home / relative).write_text(secret)
    project = home / "project"
    project.mkdir()
    host_env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    git("init", "-q", cwd=project, env=host_env)
    (project / "notes.md").write_text("hello\n")
    git("add", "notes.md", cwd=project, env=host_env)
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-qm",
        "init",
        cwd=project,
        env=host_env,
    )
    for name in (
        "JUPYTER_RUNTIME_DIR",
        "JUPYTER_DATA_DIR",
        "JUPYTER_CONFIG_DIR",
        "XDG_DATA_HOME",
        "XDG_RUNTIME_DIR",
        "IPYTHONDIR",
        "JUPYTER_PATH",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    state = home / ".local/share/jupyter/omnikernel/harness-state"
    own = state / "mine" / "claude"
    for d in ("home", "tmp"):
        (own / d).mkdir(parents=True)
    return {
        "home": home,
        "project": project,
        "state": state,
        "own": own,
        "host_env": host_env,
        "marker": tmp_path / "PWNED",
        "tmp": tmp_path,
    }


def agent_spec(world, workdir: Path) -> SandboxSpec:
    """What a harness gets (`Harness.start_process`), with a shell as the agent."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(world["own"] / "home"),
        "LANG": "C.UTF-8",
        "TMPDIR": str(world["own"] / "tmp"),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    store_dir = world["home"] / ".local/share/jupyter/omnikernel"
    return for_agent(
        workdir=workdir,
        env=env,
        argv0="/bin/bash",
        private=(world["own"],),
        hidden=(store_dir, world["state"]),
    )


def crowd(world, count: int = 1000) -> Path:
    """`count` other sessions' state dirs beside this session's (a kernel in use for a while):
    each holds a secret. firejail once blacklisted them one argument each, and refused to start
    past 128 arguments (issue 28). Returns the last one's secret file."""
    for i in range(count):
        (world["state"] / f"s{i:04}" / "claude").mkdir(parents=True)
    secret = world["state"] / f"s{count - 1:04}" / "claude" / "transcript.jsonl"
    secret.write_text("OTHER-SESSION-SECRET")
    return secret


async def run_async(backend: str, script: str, spec: SandboxSpec) -> tuple[int, str]:
    argv = ["/bin/bash", "-c", script]
    if backend == "none":
        proc = await start_process(argv, cwd=spec.workdir, env=spec.env)
    else:
        proc = await start_sandboxed(argv, spec, resolve(backend))
    proc.stdin.close()
    out, err = await asyncio.wait_for(proc.process.communicate(), 60)
    await proc.kill()
    return proc.returncode or 0, (out + err).decode(errors="replace")


def run(backend: str, script: str, spec: SandboxSpec) -> tuple[int, str]:
    return asyncio.run(run_async(backend, script, spec))


def blocked(backend: str, output: str) -> None:
    """A refused write fails with an error the kernel explains in the cell."""
    if backend != "none":
        assert explain_refusal(output), output


# -- reads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", list(SECRETS))
def test_credentials_other_projects_store_and_other_sessions_are_unreadable(
    backend, world, relative
):
    spec = agent_spec(world, world["project"])
    out = run(backend, f"cat {world['home'] / relative}", spec)[1]
    assert (SECRETS[relative] in out) is (backend == "none"), out


def test_root_only_files_and_the_real_home_are_unreadable(backend, world):
    real_home = Path(os.path.realpath(os.path.expanduser("~root")))
    planted = real_home / f".omnikernel-test-secret-{uuid.uuid4().hex[:8]}"
    planted.write_text("REAL-HOME-SECRET")
    try:
        spec = agent_spec(world, world["project"])
        out = run(backend, f"cat /etc/shadow {planted}; ls -a /root /home", spec)[1]
    finally:
        planted.unlink()
    if os.getuid() == 0:  # as root the owner's read of /etc/shadow is what must be stopped
        assert ("\nroot:" in f"\n{out}") is (backend == "none"), out
    assert ("REAL-HOME-SECRET" in out) is (backend == "none"), out


def test_host_sockets_and_host_tmp_are_out_of_reach(backend, world, tmp_path):
    """Unix sockets anywhere (tmux, docker, D-Bus, other sessions' bridges; here one in the
    notebook's folder and one under /run) cannot be connected to; /tmp is private."""
    sockets = [
        world["project"] / "s" / "agent.sock",
        Path(f"/run/omnikernel-test-{os.getpid()}.sock"),
    ]
    servers = []
    for path in sockets:
        path.parent.mkdir(exist_ok=True)
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.listen()
        servers.append(server)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0omnikernel-test-{os.getpid()}")
    abstract.listen()
    servers.append(abstract)
    host_file = Path("/tmp") / f"omnikernel-test-host-{uuid.uuid4().hex[:8]}"
    host_file.write_text("HOST-TMP")
    probe = "; ".join(
        f"{sys.executable if backend == 'none' else '/usr/bin/python3'} -c "
        f"\"import socket; s = socket.socket(socket.AF_UNIX); s.connect('{p}'); print('CONNECTED')\""
        for p in [*sockets, f"\\0omnikernel-test-{os.getpid()}"]
    )
    try:
        out = run(backend, f"{probe}; cat {host_file}", agent_spec(world, world["project"]))[1]
    finally:
        host_file.unlink()
        for server in servers:
            server.close()
        for path in sockets:
            path.unlink()
    assert out.count("CONNECTED") == (3 if backend == "none" else 0), out
    assert ("HOST-TMP" in out) is (backend == "none"), out


# -- planted files: the delayed effect on the host ---------------------------------------------


def host_git_status(world, repo: Path) -> None:
    git("status", cwd=repo, env=world["host_env"])


def test_git_fsmonitor_planted_in_the_notebook_repo(backend, world):
    marker = world["marker"]
    code, out = run(
        backend,
        f"git config core.fsmonitor 'touch {marker}; false'",
        agent_spec(world, world["project"]),
    )
    blocked(backend, out)
    host_git_status(world, world["project"])
    assert marker.exists() is (backend == "none")


def test_git_dir_renamed_and_recreated(backend, world):
    """Moving `.git` away and making a new one with a planted config: `.git` is pinned."""
    marker = world["marker"]
    script = (
        f"mv .git .git-away && git init -q && git config core.fsmonitor 'touch {marker}; false'"
    )
    out = run(backend, script, agent_spec(world, world["project"]))[1]
    blocked(backend, out)
    host_git_status(world, world["project"])
    assert marker.exists() is (backend == "none")


def test_git_init_in_a_folder_without_a_repo(backend, world):
    folder = world["home"] / "fresh"
    folder.mkdir()
    marker = world["marker"]
    out = run(
        backend,
        f"git init -q && git config core.fsmonitor 'touch {marker}; false'",
        agent_spec(world, folder),
    )[1]
    blocked(backend, out)
    host_git_status(world, folder)
    assert marker.exists() is (backend == "none")
    if backend != "none":  # the placeholders are gone, and what git init made holds no config
        assert not (folder / ".git" / "config").exists()
        assert not (folder / ".git" / "commondir").exists()


def test_git_commondir_pointing_at_a_planted_config(backend, world):
    """Beyond the anchors: `.git/commondir` makes git read its config from another dir."""
    marker = world["marker"]
    script = (
        f"mkdir -p evil/objects evil/refs && cp .git/config evil/config && printf "
        f"'[core]\\n\\tfsmonitor = \"touch {marker}; false\"\\n' >> evil/config && "
        "echo ../evil > .git/commondir"
    )
    out = run(backend, script, agent_spec(world, world["project"]))[1]
    blocked(backend, out)
    host_git_status(world, world["project"])
    assert marker.exists() is (backend == "none")
    assert not (world["project"] / ".git" / "commondir").exists() or backend == "none"


def test_a_git_file_pointing_elsewhere_cannot_be_rewritten(backend, world):
    """A worktree's `.git` is a file naming its git dir: rewritten, it could name a planted one."""
    worktree = world["home"] / "wt"
    git("worktree", "add", "-q", str(worktree), cwd=world["project"], env=world["host_env"])
    marker = world["marker"]
    script = (
        f"(cd $TMPDIR && git init -q made) && cp -r $TMPDIR/made/.git evil && git config "
        f"--file evil/config core.fsmonitor 'touch {marker}; false' && "
        "echo 'gitdir: evil' > .git"
    )
    out = run(backend, script, agent_spec(world, worktree))[1]
    blocked(backend, out)
    host_git_status(world, worktree)
    assert marker.exists() is (backend == "none")


def test_the_agent_can_still_commit(backend, world):
    script = (
        "echo change >> notes.md && git add notes.md && "
        "git -c user.name=agent -c user.email=a@a commit -qm 'agent commit' && echo DONE"
    )
    code, out = run(backend, script, agent_spec(world, world["project"]))
    assert code == 0 and "DONE" in out, out
    log = git("log", "--oneline", cwd=world["project"], env=world["host_env"]).stdout
    assert "agent commit" in log


@pytest.mark.parametrize("relative", [".vscode/tasks.json", ".idea/workspace.xml",
                                      ".git/hooks/post-checkout", ".git/info/attributes",
                                      ".omnikernel/policy.toml", ".gemini/settings.json",
                                      ".gemini/policies/allow.toml"])  # fmt: skip
def test_files_host_tools_run_cannot_be_created(backend, world, relative):
    target = world["project"] / relative
    out = run(
        backend,
        f"mkdir -p {target.parent} && echo planted > {target}",
        agent_spec(world, world["project"]),
    )[1]
    blocked(backend, out)
    assert (target.exists() and target.read_text() == "planted\n") is (backend == "none")


@pytest.mark.parametrize("name", [".envrc", ".gitmodules", ".bashrc", ".config/app.toml"])
def test_existing_files_host_tools_read_cannot_be_changed(backend, world, name):
    """In any folder, not only a home: an existing one stays as it is."""
    target = world["project"] / name
    target.parent.mkdir(exist_ok=True)
    target.write_text("original\n")
    out = run(backend, f"echo planted >> {target}", agent_spec(world, world["project"]))[1]
    blocked(backend, out)
    assert ("planted" in target.read_text()) is (backend == "none")


def test_shell_startup_file_in_a_notebook_folder_that_is_the_home(backend, world):
    marker = world["marker"]
    home = world["home"]
    out = run(
        backend,
        f"echo 'touch {marker}' >> {home}/.bashrc; echo 'touch {marker}' >> {home}/.zshrc",
        agent_spec(world, home),
    )[1]
    blocked(backend, out)
    subprocess.run(["bash", "-ic", "true"], env=world["host_env"], capture_output=True, timeout=30)
    assert marker.exists() is (backend == "none")
    # The placeholder that kept .zshrc from being created is gone once the agent stopped.
    assert (home / ".zshrc").exists() is (backend == "none")


def test_authorized_keys_in_a_notebook_folder_that_is_the_home(backend, world):
    home = world["home"]
    out = run(
        backend,
        f"mkdir -p {home}/.ssh && echo ssh-ed25519 AAAA attacker >> {home}/.ssh/authorized_keys",
        agent_spec(world, home),
    )[1]
    blocked(backend, out)
    assert (home / ".ssh/authorized_keys").exists() is (backend == "none")


def test_global_gitconfig_in_a_notebook_folder_that_is_the_home(backend, world):
    marker = world["marker"]
    out = run(
        backend,
        f"git config --file {world['home']}/.gitconfig core.fsmonitor 'touch {marker}; false'",
        agent_spec(world, world["home"]),
    )[1]
    blocked(backend, out)
    host_git_status(world, world["project"])
    assert marker.exists() is (backend == "none")


def test_kernelspec_in_a_notebook_folder_that_is_the_home(backend, world):
    kernels = world["home"] / ".local/share/jupyter/kernels/planted"
    spec = {"argv": ["sh", "-c", "touch /tmp/pwned"], "display_name": "Planted", "language": "sh"}
    out = run(
        backend,
        f"mkdir -p {kernels} && echo '{json.dumps(spec)}' > {kernels}/kernel.json",
        agent_spec(world, world["home"]),
    )[1]
    blocked(backend, out)
    jupyter = Path(sys.executable).parent / "jupyter"
    listed = subprocess.run(
        [str(jupyter), "kernelspec", "list"],
        capture_output=True,
        text=True,
        env={**world["host_env"], "PATH": f"{jupyter.parent}:/usr/bin:/bin"},
        timeout=60,
    ).stdout
    assert ("planted" in listed) is (backend == "none"), listed


def test_ipython_startup_file_in_a_notebook_folder_that_is_the_home(backend, world):
    from jupyter_client.manager import KernelManager

    marker = world["marker"]
    startup = world["home"] / ".ipython/profile_default/startup"
    out = run(
        backend,
        f"mkdir -p {startup} && echo \"open('{marker}', 'w')\" > {startup}/00.py",
        agent_spec(world, world["home"]),
    )[1]
    blocked(backend, out)
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env={**os.environ, "HOME": str(world["home"])}, cwd=str(world["tmp"]))
    try:
        client = km.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        client.execute_interactive("1", timeout=30)
        client.stop_channels()
    finally:
        km.shutdown_kernel(now=True)
    assert marker.exists() is (backend == "none")


# -- parity and the CLI under a closed home ----------------------------------------------------

PROBES = {
    "read agent login": "cat {home}/.claude/.credentials.json",
    "read other project": "cat {home}/other-project/.env",
    "read store": "cat {home}/.local/share/jupyter/omnikernel/sessions.sqlite3",
    "read other session": "cat {home}/.local/share/jupyter/omnikernel/harness-state/other/claude/home/transcript.jsonl",
    "read a session among 1,000": "cat {crowded}",
    "list the other sessions": "ls {home}/.local/share/jupyter/omnikernel/harness-state | grep s0999",
    "read shadow": "cat /etc/shadow",
    "read real home": "cat /root/.profile",
    "write notebook folder": "echo x > {work}/made && cat {work}/made",
    "write own state": "echo x > {own}/home/made && cat {own}/home/made",
    "write outside": "echo x > {home}/other-project/made",
    "write git config": "echo x >> {work}/.git/config",
    "write git objects": "git -C {work} hash-object -w --stdin <<< x",
    "create .vscode": "mkdir {work}/.vscode/x",
    "rename .git": "mv {work}/.git {work}/.git-away",
    "write /tmp": "echo x > /tmp/made && cat /tmp/made",
    "read the kernel's environment": "cat /proc/{kernel}/environ",
    "write a home inside": "echo x >> /home/.omnikernel-probe",
}  # fmt: skip


def answer(code: int, out: str) -> str:
    secret = any(s in out for s in SECRETS.values()) or "\nroot:" in f"\n{out}"
    return "ok" + (" (secret)" if secret else "") if code == 0 and out.strip() else "refused"


def test_both_backends_give_the_same_answers(world):
    crowded = crowd(world)
    spec = agent_spec(world, world["project"])
    fields = {
        "home": world["home"],
        "work": world["project"],
        "own": world["own"],
        "kernel": os.getpid(),
        "crowded": crowded,
    }
    answers = {}
    for backend in SANDBOXES:
        answers[backend] = {
            name: answer(*run(backend, probe.format(**fields), spec))
            for name, probe in PROBES.items()
        }
        git("checkout", "-q", ".", cwd=world["project"], env=world["host_env"])
    assert answers["bwrap"] == answers["firejail"]
    expected_ok = {"write notebook folder", "write own state", "write git objects", "write /tmp"}
    assert {name for name, a in answers["bwrap"].items() if a == "ok"} == expected_ok, answers


def test_a_cli_and_node_installed_under_the_home_still_run(backend, world):
    """node under ~/.nvm and a global npm CLI under ~/.npm-global, found through the PATH."""
    home = world["home"]
    node_dir = home / ".nvm/versions/node/v99/bin"
    node_dir.mkdir(parents=True)
    node = shutil.which("node")
    assert node, "node is needed: apt-get install -y --no-install-recommends nodejs"
    try:
        os.link(os.path.realpath(node), node_dir / "node")
    except OSError:
        shutil.copy2(os.path.realpath(node), node_dir / "node")
    package = home / ".npm-global/lib/node_modules/fakecli"
    package.mkdir(parents=True)
    (package / "cli.js").write_text(
        "#!/usr/bin/env node\nconsole.log('cli-ran', process.execPath)\n"
    )
    (package / "cli.js").chmod(0o755)
    (home / ".npm-global/bin").mkdir()
    (home / ".npm-global/bin/fakecli").symlink_to(package / "cli.js")
    spec = agent_spec(world, world["project"])
    path = f"{home}/.npm-global/bin:{node_dir}:/usr/bin:/bin"
    spec = for_agent(
        workdir=spec.workdir,
        env={**spec.env, "PATH": path},
        argv0=str(home / ".npm-global/bin/fakecli"),
        private=spec.writable,
    )
    code, out = run(backend, f"fakecli; cat {home}/.ssh/id_ed25519", spec)
    assert f"cli-ran {node_dir / 'node'}" in out, out
    assert ("SSH-KEY-SECRET" in out) is (backend == "none"), out


def test_the_agent_starts_beside_a_masked_folder_of_1000_entries(backend, world):
    """The notebook folder is the home, so Jupyter's data dir is a mask inside an opened folder
    (not closed by a whitelist), and the agent's own state inside it sits among 1,000 other
    sessions' state dirs: the agent starts, reaches its own state, and reads none of the others
    (under firejail their names stay, as empty read-only dirs; under bwrap they are gone)."""
    secret = crowd(world)
    own = world["own"] / "home"
    script = f"echo mine > {own}/made && cat {own}/made; ls {secret.parent}; cat {secret}"
    code, out = run(backend, script, agent_spec(world, world["home"]))
    listed = ["transcript.jsonl"] if backend == "none" else []
    assert out.splitlines()[: 1 + len(listed)] == ["mine", *listed], out
    assert ("OTHER-SESSION-SECRET" in out) is (backend == "none"), out


# -- clean-up ----------------------------------------------------------------------------------


def test_run_dir_and_placeholders_are_removed_when_the_agent_stops(world):
    """Only this agent's own run dir is looked at: other test workers start agents under the
    same run root at the same time."""
    home = world["home"]
    spec = agent_spec(world, home)

    def look(run_dir: Path) -> tuple[bool, bool]:
        made = run_dir.parent == run_root() and run_dir.is_dir()
        placed = (home / ".zshrc").exists() and (home / ".vscode").is_dir()
        return made, placed

    async def start_and_look() -> tuple[Path, bool, bool]:
        proc = await start_sandboxed(["/bin/sleep", "30"], spec, resolve("auto"))
        run_dir = Path(proc.run.path)
        made, placed = look(run_dir)
        await proc.kill()
        return run_dir, made, placed

    run_dir, made, placed = asyncio.run(start_and_look())
    assert made and placed
    assert not run_dir.exists()
    assert not (home / ".zshrc").exists() and not (home / ".vscode").exists()


KILLED_KERNEL = """
import asyncio, sys
from pathlib import Path
from omnikernel.sandbox import for_agent, resolve, start_sandboxed

async def main():
    home = Path(sys.argv[1])
    spec = for_agent(workdir=home, env={"PATH": "/usr/bin:/bin"}, argv0="/bin/sleep",
                     private=(), bridged_ports=(9,))
    proc = await start_sandboxed(["/bin/sleep", "60"], spec, resolve("auto"))
    print(proc.run.path, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_a_killed_kernel_leaves_nothing_after_the_next_start(world):
    """SIGKILL gives the kernel no chance to clean up: the next start sweeps what it left."""
    home = world["home"]
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_KERNEL, str(home)],
        text=True,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert child.stdout is not None
    run_dir = Path(child.stdout.readline().strip())
    assert run_dir.is_dir() and (run_dir / "b" / "port-9.sock").exists()
    assert (home / ".zshrc").exists()
    child.kill()
    child.wait()
    assert run_dir.exists()  # nothing removed it
    RunDir.create().remove()  # the next start of any sandboxed agent
    assert not run_dir.exists()
    assert not (home / ".zshrc").exists() and not (home / ".vscode").exists()
    assert not [p for p in sweep() if p == run_dir]


def test_every_protected_entry_says_why():
    assert all(len(entry.why) > 20 for entry in PROTECTED)
    page = (Path(__file__).resolve().parent.parent / "docs" / "sandbox.md").read_text()
    for entry in PROTECTED:
        assert f"`{entry.name}`" in page, (
            f"docs/sandbox.md does not say why {entry.name} is protected"
        )


@pytest.mark.parametrize(
    ("output", "says"),
    [
        ("error: could not lock config file .git/config: Read-only file system", "`.git/config`"),
        ("mv: cannot move '.git' to 'x': Device or resource busy", "cannot be moved"),
        ("bash: /home/u/.bashrc: Read-only file system", "`.bashrc`"),
        ("touch: cannot touch '/usr/x': Read-only file system", "only the notebook's folder"),
        ("cat: x: Permission denied", None),  # not the sandbox's doing as far as we can tell
        ("all good", None),
    ],
)
def test_refusals_are_explained(output, says):
    why = explain_refusal(output)
    assert (why is None) if says is None else (says in why)


def test_our_kernel_does_not_import_modules_planted_in_the_notebook_folder(tmp_path):
    """`python -m X` puts the working directory first on sys.path, so a kernel started in the
    notebook's folder would import a package the agent wrote there (`omnikernel/`, or any module
    the kernel imports). Our kernelspec runs Python with -P, which leaves the folder out."""
    spec = json.loads(
        (
            Path(__file__).resolve().parent.parent / "share/jupyter/kernels/omnikernel/kernel.json"
        ).read_text()
    )
    folder = tmp_path / "notebooks"
    (folder / "omnikernel").mkdir(parents=True)
    marker = tmp_path / "PWNED"
    (folder / "omnikernel" / "__init__.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (folder / "omnikernel" / "__main__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    version = [sys.executable, *spec["argv"][1 : spec["argv"].index("-f")], "--version"]
    unsafe = [sys.executable, "-m", "omnikernel", "--version"]
    subprocess.run(version, cwd=folder, env=env, capture_output=True, timeout=60)
    assert not marker.exists()
    subprocess.run(unsafe, cwd=folder, env=env, capture_output=True, timeout=60)
    assert marker.exists(), "without -P the planted package runs"


def test_the_real_home_as_notebook_folder_renders_on_both_backends():
    """The account's own home (where firejail cannot whitelist, and where Jupyter's data dir
    and its runtime dir are masks inside masks): rendered, not run, so nothing is placed in
    the real home by the test."""
    from omnikernel.sandbox import bwrap, firejail
    from omnikernel.sandbox.spec import plan

    home = Path(os.path.realpath(os.path.expanduser("~")))
    spec = for_agent(workdir=home, env={"PATH": "/usr/bin:/bin"}, argv0="/bin/sh", private=())
    mounts = plan(spec)
    masks = [m.path for m in mounts if m.kind == "mask"]
    assert not [m for m in masks if any(m != o and m.is_relative_to(o) for o in masks)]
    run = RunDir(Path("/tmp/omnikernel-run-test/x"))
    fj = firejail.profile(mounts, run)
    assert f"whitelist {home}" not in fj and not any("sandbox-closed" in a for a in fj)
    assert f"read-write {home}" in fj and f"read-only {home}/.bashrc" in fj
    bw = bwrap.command("bwrap", ["true"], home, mounts, run)
    triples = list(zip(bw, bw[1:], bw[2:], strict=False))
    assert ("--bind", str(home), str(home)) in triples
    assert ("--remount-ro", str(home)) not in list(zip(bw, bw[1:], strict=False))
