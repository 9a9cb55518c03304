"""Data both ways between Python cells and agent cells, with the real `claude` CLI in its
sandbox: a DataFrame handed over as a file the agent's shell command reads, `_agent` and
`--out` after a turn, and `%fix` sending the last traceback with its cell's source."""

from __future__ import annotations

import pytest

from omnikernel.testing import FakeModelServer, Scenario

from .conftest import require_claude

SCENARIO = {
    "rules": [
        {
            "match": "total of sales",
            "steps": [
                {
                    "text": "Reading the full data.",
                    "tool_calls": [
                        {
                            "action": "shell",
                            "command": "awk -F, 'NR>1{s+=$2} END{print \"sum=\" s}' "
                            "agent-data/df.csv | tee total.txt",
                        }
                    ],
                },
                {"text": "The total of sales is 1234."},
            ],
        },
        {"match": "echo back", "steps": [{"text": "You said: {prompt}"}]},
        {
            "match": "Python cell of my notebook failed",
            "steps": [{"text": "Guard the empty list."}],
        },
    ]
}

FRAME = (
    "%%python\nimport pandas as pd\n"
    "df = pd.DataFrame({'city': ['Oslo', 'Lima', 'Pune', 'Kyiv'], 'sales': [1000, 200, 30, 4]})"
)


@pytest.fixture
def model():
    require_claude()
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as server:
        yield server


def kernel_for(model, workdir, start_kernel):
    return start_kernel(
        workdir,
        ANTHROPIC_BASE_URL=model.base_url,
        ANTHROPIC_API_KEY="test-key",
        OMNIKERNEL_AUTO_APPROVE="1",
    )


def bodies(model) -> str:
    return "\n".join(str(r.body) for r in model.requests if r.path.startswith("/v1/messages"))


def test_dataframe_goes_in_as_a_file_and_the_answer_comes_back(model, workdir, start_kernel):
    kernel = kernel_for(model, workdir, start_kernel)
    assert kernel.execute(FRAME).status == "ok"
    turn = kernel.execute("%%agent claude --out answer\nWhat is the total of sales in {df}?")
    assert turn.status == "ok", turn.text
    # The cell says what was put in; the prompt the model got names the file, not the rows.
    assert "{df} ← DataFrame 4×2 → agent-data/df.csv" in turn.text
    sent = bodies(model)
    assert "4 rows × 2 columns" in sent and "agent-data/df.csv" in sent and "sales: int64" in sent
    # The agent's shell command read the whole file inside the sandbox.
    assert "sandbox: " in turn.text and "SANDBOX OFF" not in turn.text
    assert "sum=1234" in turn.text
    assert (workdir / "total.txt").read_text().strip() == "sum=1234"

    back = kernel.execute(
        "%%python\nprint(repr(_agent))\nprint('ANSWER', answer == _agent.text, type(answer).__name__)\nprint('FILES', _agent.files)\n"
        "print('OUT', _agent.tool_calls[0].output.strip())\nprint('TEXT', _agent.text)\n"
        "print('COST', _agent.cost_usd is not None or _agent.input_tokens > 0)"
    )
    assert back.status == "ok", back.text
    out = back.text
    assert "AgentResult(claude turn 1 · completed · 1 tool call · files: total.txt" in out
    assert "ANSWER True str" in out
    assert "FILES ['total.txt']" in out  # the data file written for the prompt is not the agent's
    assert "OUT sum=1234" in out
    assert "TEXT Reading the full data.\n\nThe total of sales is 1234." in out
    assert "COST True" in out


def test_prompts_with_json_and_code_reach_the_agent_unchanged(model, workdir, start_kernel):
    kernel = kernel_for(model, workdir, start_kernel)
    assert kernel.execute("%%python\ni = 3\nconfig = {'a': 1}").status == "ok"
    prompt = 'Please echo back {"i": {i}} then\n```py\nf"{i}"\n```\nand {{i}} and {nothing}'
    turn = kernel.execute(prompt)
    assert turn.status == "ok", turn.text
    expected = 'echo back {"i": 3} then\n```py\nf"{i}"\n```\nand {i} and {nothing}'
    assert expected in turn.text, turn.outputs
    assert turn.text.count("{i} ← int") == 1  # one substitution: not the fence, not the escape


def test_fix_sends_the_last_traceback_and_its_cell(model, workdir, start_kernel):
    kernel = kernel_for(model, workdir, start_kernel)
    assert "no Python cell has failed" in kernel.execute("%fix").text
    failed = kernel.execute("%%python\ndef mean(xs):\n    return sum(xs) / len(xs)\n\nmean([])")
    assert failed.status == "error"
    fixed = kernel.execute("%fix the list may be empty")
    assert fixed.status == "ok", fixed.text
    assert "Guard the empty list." in fixed.text
    sent = bodies(model)
    assert "ZeroDivisionError" in sent and "return sum(xs) / len(xs)" in sent
    assert "the list may be empty" in sent and "\\x1b[" not in sent  # no terminal colours
    assert "Guard the empty list." in kernel.execute("%%python\nprint(_agent.text)").text
