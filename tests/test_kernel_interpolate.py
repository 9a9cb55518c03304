"""Kernel values in prompts (`omnikernel.kernel.interpolate`): each form, the escape, and prompts with
code, JSON or braces of their own that must pass unchanged."""

from __future__ import annotations

import types

import pandas as pd
import pytest

from omnikernel.kernel.interpolate import MAX_VALUE_CHARS, ValueWriter, interpolate

RESULT = types.SimpleNamespace(summary="three outliers", inner=types.SimpleNamespace(n=7))
NAMESPACE = {
    "x": 42,
    "name": "Ada",
    "result": RESULT,
    "In": ["", "x = 42", "print(x)", "df = load()"],
    "Out": {2: [1, 2, 3]},
    "Err": "Traceback (most recent call last):\nZeroDivisionError: division by zero",
    "i": 3,
    "items": ["a", "b"],
}

CASES = [
    # (prompt, expected text)
    ("What is {x}?", "What is 42?"),
    ("Hello {name}", "Hello Ada"),  # strings go in as written, not repr'd
    ("Summary: {result.summary}", "Summary: three outliers"),
    ("n={result.inner.n}", "n=7"),
    ("Explain {In[3]}", "Explain df = load()"),
    ("Plot {Out[2]}", "Plot [1, 2, 3]"),
    ("Fix {Err}", "Fix " + NAMESPACE["Err"]),
    ("{items[-1]}", "b"),
    ("{x}{name}", "42Ada"),
    # unchanged: names that do not exist, JSON, spaced braces, code, templates
    ("Use {undefined} here", "Use {undefined} here"),
    ('Return {"x": 1, "y": [2]}', 'Return {"x": 1, "y": [2]}'),
    ('{"a": {"b": {"c": 1}}}', '{"a": {"b": {"c": 1}}}'),
    ("set { x } and {x!r} and {x:>4}", "set { x } and {x!r} and {x:>4}"),
    ("function f() { return {}; }", "function f() { return {}; }"),
    ('```python\nprint(f"{x} {i}")\n```\nthen {x}', '```python\nprint(f"{x} {i}")\n```\nthen 42'),
    ("~~~\nfor i in {i}: pass\n~~~", "~~~\nfor i in {i}: pass\n~~~"),
    ("Jinja {{title}} stays", "Jinja {{title}} stays"),  # escape of an unknown name: unchanged
    ("\\begin{x}", "\\begin42"),  # a known name in braces is a reference, wherever it is
    # the escape
    ("Literal {{x}} and value {x}", "Literal {x} and value 42"),
    ("Literal {{result.summary}}", "Literal {result.summary}"),
    # a failing attribute or index is left as written
    ("{result.missing}", "{result.missing}"),
    ("{Out[9]}", "{Out[9]}"),
]


def plain(ref, value):
    return (value if isinstance(value, str) else repr(value)), type(value).__name__, ""


@pytest.mark.parametrize(("prompt", "expected"), CASES)
def test_interpolation_table(prompt, expected):
    text, _ = interpolate(prompt, NAMESPACE, plain)
    assert text == expected


def test_substitutions_are_reported_with_problems():
    _, subs = interpolate("{x} {result.missing} {undefined} {{x}}", NAMESPACE, plain)
    assert [(s.ref, s.summary) for s in subs][:1] == [("x", "int")]
    assert subs[1].ref == "result.missing" and "AttributeError" in subs[1].problem
    assert len(subs) == 2  # neither the unknown name nor the escape is a substitution


def test_long_repr_is_cut(tmp_path):
    text, subs = interpolate("{big}", {"big": list(range(5000))}, ValueWriter(tmp_path))
    assert len(text) < MAX_VALUE_CHARS + 100
    assert "more characters cut" in text and "cut to" in subs[0].summary


def test_dataframe_becomes_shape_dtypes_head_and_a_file(tmp_path):
    frame = pd.DataFrame({"city": ["Oslo", "Lima", "Pune"] * 10, "temp": range(30)})
    text, subs = interpolate("Analyse {df}", {"df": frame}, ValueWriter(tmp_path))
    assert "30 rows × 2 columns" in text
    assert "city: object" in text or "city: str" in text
    assert "temp: int64" in text
    assert "Oslo" in text and "29" not in text.split("First")[1]  # the head only
    assert subs[0].file == "agent-data/df.csv"  # no pyarrow in the test venv: CSV
    assert subs[0].file in text
    loaded = pd.read_csv(tmp_path / subs[0].file)
    assert loaded.shape == (30, 2) and loaded["temp"].sum() == sum(range(30))


def test_out_takes_a_python_name_in_an_agent_cell_only():
    from IPython.core.error import UsageError

    from omnikernel.kernel.magics.common import parse_agent_args

    assert parse_agent_args("claude --out answer", allow_review=True).out == "answer"
    assert parse_agent_args("claude --out=res --model m", allow_review=True).out == "res"
    for bad in ("claude --out", "claude --out 2x", "claude --out class"):
        with pytest.raises(UsageError):
            parse_agent_args(bad, allow_review=True)
    with pytest.raises(UsageError):
        parse_agent_args("claude --out answer")  # %agent (a line magic) has no answer to store


def test_agent_result_from_events_and_its_repr(tmp_path):
    from omnikernel.events import Event, EventKind
    from omnikernel.kernel.agent_result import result_from_events, snapshot

    (tmp_path / "old.txt").write_text("a")
    before = snapshot(tmp_path)
    (tmp_path / "old.txt").write_text("changed")
    (tmp_path / "new.csv").write_text("x")
    events = [
        Event(EventKind.TURN_START, {"prompt": "go", "model": "m"}, harness="pi", turn=4),
        Event(EventKind.TEXT, {"text": "Looking."}, harness="pi", turn=4),
        Event(
            EventKind.TOOL_CALL,
            {"call_id": "c", "tool": "bash", "action": "exec", "summary": "ls"},
            harness="pi",
            turn=4,
        ),
        Event(EventKind.TOOL_RESULT, {"call_id": "c", "output": "new.csv"}, harness="pi", turn=4),
        Event(EventKind.TEXT, {"text": "Done."}, harness="pi", turn=4),
        Event(EventKind.SPEND, {"input_tokens": 10, "output_tokens": 2, "cost_usd": 0.5}),
        Event(EventKind.TURN_END, {"status": "completed"}, harness="pi", turn=4),
    ]
    result = result_from_events(events, folder=tmp_path, before=before, after=snapshot(tmp_path))
    assert result.text == "Looking.\n\nDone." and str(result) == result.text
    assert result.files_created == ["new.csv"] and result.files_changed == ["old.txt"]
    assert result.tool_calls[0].output == "new.csv" and result.cost_usd == 0.5
    assert repr(result) == (
        "AgentResult(pi turn 4 · completed · 1 tool call · files: new.csv, old.txt · $0.5000: "
        "'Looking.  Done.')"
    )


def test_terminal_text_loses_control_characters():
    from omnikernel.view.render import terminal_safe

    assert terminal_safe("ok\x1b]52;c;ZXZpbA==\x07\r\tdone\n") == "ok]52;c;ZXZpbA==\tdone\n"
