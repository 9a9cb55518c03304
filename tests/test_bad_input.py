"""Bad input: each a clear error (or a warning where the kernel can go on), the kernel alive."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from omnikernel.events import EventKind
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.store.sessions import SessionStore

from .conftest import require_claude

SCENARIO = {
    "rules": [
        {"match": "which word", "steps": [{"text": "The word was heron."}]},
        {"match": "remember", "steps": [{"text": "Noted: the word is heron."}]},
        {"match": "count", "steps": [{"text": "one two three", "chunk_delay": 0.2}]},
    ]
}


@pytest.fixture
def model():
    require_claude()
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as server:
        yield server


def env_for(model: FakeModelServer, **extra: str) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": "test-key",
        "OMNIKERNEL_AUTO_APPROVE": "1",
        **extra,
    }


def assert_alive(kernel) -> None:
    result = kernel.execute("%%python\nprint(6 * 7)")
    assert result.status == "ok" and "42" in result.text


def test_a_cli_of_another_version_runs_with_a_warning_naming_both(
    model, workdir, tmp_path, start_kernel
):
    claude = require_claude()
    wrapper = tmp_path / "bin" / "claude"
    wrapper.parent.mkdir()
    wrapper.write_text(
        '#!/bin/sh\nif [ "$1" = "--version" ]; then echo "9.9.9 (Claude Code)"; exit 0; fi\n'
        f"exec '{claude}' \"$@\"\n"
    )
    wrapper.chmod(0o755)
    config = tmp_path / "config"
    config.mkdir()
    (config / "omnikernel_config.py").write_text(
        f"c.OmniKernel.harness_paths = {{'claude': {str(wrapper)!r}}}\n"
        f"c.OmniKernel.sandbox_readable = [{str(wrapper.parent)!r}, {str(Path(claude).parent.parent)!r}]\n"
    )
    kernel = start_kernel(workdir, **env_for(model, JUPYTER_CONFIG_DIR=str(config)))
    result = kernel.execute("Please remember a word.")
    assert result.status == "ok", result.text
    assert (
        f"Claude Code at {wrapper} is 9.9.9 (Claude Code); omnikernel is tested with 2.1.197"
        in result.text
    )
    assert "npm install -g @anthropic-ai/claude-code@2.1.197" in result.text
    assert "Noted: the word is heron." in result.text  # it ran anyway
    again = kernel.execute("Which word did I ask you to remember?")
    assert again.status == "ok" and "tested with" not in again.text  # said once


def test_a_broken_config_file_is_named_and_the_kernel_runs(model, workdir, tmp_path, start_kernel):
    config = tmp_path / "config"
    config.mkdir()
    (config / "omnikernel_config.py").write_text(
        "c.OmniKernel.default_harness = 'claude'\nthis = (is not python\n"
    )
    kernel = start_kernel(workdir, **env_for(model, JUPYTER_CONFIG_DIR=str(config)))
    result = kernel.execute("Please remember a word.")
    assert result.status == "ok", result.text
    assert (
        f"The config file {config / 'omnikernel_config.py'} is broken and was left out (line 2)"
        in result.text
    )
    assert "SyntaxError" in result.text and "fix the file, then restart the kernel" in result.text
    assert "Noted: the word is heron." in result.text


@pytest.mark.parametrize(
    ("cell", "says"),
    [
        ("%fork one two", "Usage: %fork [NAME]"),
        ("%fork bad/name", "session name"),
        ("%export", "Usage: %export md|html|jsonl|ipynb [FILE]"),
        ("%export docx", "Unknown export format 'docx'"),
        ("%export md /nonexistent-dir/x.md", "Cannot write /nonexistent-dir/x.md"),
        ("%agent nosuch", "nosuch"),
        ("%replay /nonexistent.cassette.jsonl", "nonexistent"),
    ],
)
def test_wrong_magic_arguments_are_clear_errors(model, workdir, start_kernel, cell, says):
    kernel = start_kernel(workdir, **env_for(model, OMNIKERNEL_SESSION_ID="bad-args"))
    if cell.startswith(("%fork", "%export md")):
        assert kernel.execute("Please remember a word.").status == "ok"
    result = kernel.execute(cell)
    assert result.status == "error", result.text
    assert says in result.text and "Traceback" not in result.text
    assert_alive(kernel)


def test_one_notebook_in_two_kernels_stores_each_turn_once(model, workdir, tmp_path, start_kernel):
    env = env_for(model, OMNIKERNEL_SESSION_ID="shared")
    first, second = start_kernel(workdir, **env), start_kernel(workdir, **env)
    assert first.execute("Please remember a word.").status == "ok"
    results: dict[str, object] = {}

    def run(name: str, kernel, prompt: str) -> None:
        results[name] = kernel.execute(prompt)

    both = [
        threading.Thread(target=run, args=("a", first, "Please count to three.")),
        threading.Thread(target=run, args=("b", second, "Which word did I ask you to remember?")),
    ]
    for t in both:
        t.start()
    for t in both:
        t.join(180)
    assert results["a"].status == "ok", results["a"].text  # type: ignore[attr-defined]
    assert results["b"].status == "ok", results["b"].text  # type: ignore[attr-defined]
    assert "heron" in results["b"].text  # type: ignore[attr-defined]
    assert second.execute("Please count to three.").status == "ok"
    store = SessionStore(tmp_path / "store" / "sessions.sqlite3")
    events = list(store.events("shared"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    starts = [e.turn for e in events if e.kind == EventKind.TURN_START]
    ends = [e.turn for e in events if e.kind == EventKind.TURN_END]
    assert sorted(starts) == [1, 2, 3, 4] and sorted(ends) == [1, 2, 3, 4]
    prompts = [e.data["prompt"] for e in events if e.kind == EventKind.TURN_START]
    assert sorted(prompts) == sorted(
        [
            "Please remember a word.",
            "Please count to three.",
            "Which word did I ask you to remember?",
            "Please count to three.",
        ]
    )
    # Each turn's events carry its own turn number, from whichever kernel ran it.
    for turn in starts:
        kinds = [e.kind for e in events if e.turn == turn]
        assert kinds[0] == EventKind.TURN_START and kinds[-1] == EventKind.TURN_END


def test_record_in_a_folder_with_a_dot_writes_there_and_replays(model, tmp_path, start_kernel):
    folder = tmp_path / "project.v2"
    folder.mkdir()
    kernel = start_kernel(folder, **env_for(model))
    recording = kernel.execute("%record")
    assert f"Recording model traffic to {folder / 'session.cassette.jsonl'}" in recording.text
    assert kernel.execute("Please remember a word.").status == "ok"
    assert kernel.execute("%record off").status == "ok"
    assert (folder / "session.cassette.jsonl").stat().st_size > 0
    assert not (tmp_path / "session.cassette.jsonl").exists()  # not in the parent folder
    replay = kernel.execute("%replay session.cassette.jsonl")
    assert replay.status == "ok" and "Replaying" in replay.text, replay.text
    # This session holds a turn already: the replay says what a re-run carries.
    assert "already holds 1 turn(s) from before" in replay.text and "%session new" in replay.text
