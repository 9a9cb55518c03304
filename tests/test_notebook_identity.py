"""A session belongs to its notebook, whatever users do with notebook files.

A real `jupyter server` with our extension and jupyter-server-fileid, driven as JupyterLab drives
it: the contents REST API to create, rename, move, copy and delete notebooks, the sessions API
to start a notebook's kernel, and the kernel WebSocket to run cells. The real `claude` CLI talks
to the scripted model server, whose request log shows what reached the model.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from omnikernel import events as ev
from omnikernel.events import Event, EventKind
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.session.identity import legacy_session_id
from omnikernel.store.sessions import SessionStore

from .conftest import jupyter_server, kernel_env, require_claude

TOKEN = "identity-test-token"
SCENARIO = {
    "rules": [
        {"match": "remember", "steps": [{"text": "Noted."}]},
        {"match": "codename", "steps": [{"text": "I answer from the context I was given."}]},
    ],
    "fallback": {"steps": [{"text": "Done."}]},
}


class Server:
    """A running jupyter server and the few REST calls JupyterLab makes."""

    def __init__(self, url: str, root: Path, model: FakeModelServer, store: Path):
        self.url, self.root, self.model, self.store = url, root, model, store

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def new_notebook(self, folder: str = "") -> str:
        """JupyterLab's File > New > Notebook: the server picks the Untitled name."""
        return self.api("POST", f"/api/contents/{folder}", {"type": "notebook"})["path"]

    def rename(self, old: str, new: str) -> None:
        self.api("PATCH", f"/api/contents/{old}", {"path": new})

    def duplicate(self, path: str) -> str:
        folder = path.rpartition("/")[0]
        return self.api("POST", f"/api/contents/{folder}", {"copy_from": path})["path"]

    def open(self, path: str) -> Notebook:
        return Notebook(self, path)


class Notebook:
    """One notebook's kernel, started through the sessions API, run over its WebSocket."""

    def __init__(self, server: Server, path: str):
        self.server = server
        # JupyterLab 4 starts the kernel under a placeholder path, then names the notebook.
        model = server.api(
            "POST",
            "/api/sessions",
            {
                "path": str(uuid.uuid4()),
                "name": path.rpartition("/")[2],
                "type": "notebook",
                "kernel": {"name": "omnikernel"},
            },
        )
        self.session, self.kernel = model["id"], model["kernel"]["id"]
        self.follow_rename(path)
        self.cells = 0
        self.connect()

    def connect(self) -> None:
        ws_url = self.server.url.replace("http", "ws", 1)
        self.client_session = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            f"{ws_url}/api/kernels/{self.kernel}/channels?session_id={self.client_session}",
            header=[f"Authorization: token {TOKEN}"],
            timeout=180,
        )

    def restart(self) -> None:
        """The kernel menu's Restart Kernel."""
        self.ws.close()
        self.server.api("POST", f"/api/kernels/{self.kernel}/restart")
        self.connect()

    def follow_rename(self, path: str) -> None:
        """What JupyterLab does after renaming an open notebook."""
        self.server.api(
            "PATCH",
            f"/api/sessions/{self.session}",
            {"path": path, "name": path.rpartition("/")[2]},
        )

    def run(self, code: str) -> tuple[str, str]:
        """(status, all text the cell showed); also returns what the model was sent."""
        self.cells += 1
        msg_id = uuid.uuid4().hex
        self.ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "test",
                        "session": self.client_session,
                        "version": "5.3",
                        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    },
                    "parent_header": {},
                    "metadata": {"cellId": f"cell-{self.cells}"},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": True,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        text, status, idle = [], None, False
        while status is None or not idle:
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "execute_reply":
                status = content["status"]
            elif kind == "status":
                idle = content["execution_state"] == "idle"
            elif kind == "stream":
                text.append(content["text"])
            elif kind in ("display_data", "update_display_data", "execute_result"):
                text.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                text.append(f"{content['ename']}: {content['evalue']}")
        return status, "\n".join(text)

    def prompt(self, text: str) -> tuple[str, str]:
        """Run a prompt cell; (what the cell showed, everything the model was sent for it)."""
        before = len(self.server.model.requests)
        status, shown = self.run(text)
        assert status == "ok", shown
        sent = "\n".join(str(r.body) for r in self.server.model.requests[before:])
        assert text in sent  # the prompt itself did reach the model
        return shown, sent

    def session_id(self) -> str:
        status, shown = self.run("%session")
        assert status == "ok", shown
        return shown.split("Session ", 1)[1].split(":", 1)[0]

    def close(self) -> None:
        self.ws.close()
        self.server.api("DELETE", f"/api/sessions/{self.session}")  # stops the kernel


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    require_claude()
    tmp = tmp_path_factory.mktemp("identity")
    root = tmp / "notebooks"
    root.mkdir()
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as model:
        env = kernel_env(
            tmp,
            ANTHROPIC_BASE_URL=model.base_url,
            ANTHROPIC_API_KEY="k",
            OMNIKERNEL_AUTO_APPROVE="1",
            JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        )
        env.pop("OMNIKERNEL_SESSION_ID", None)
        with jupyter_server("jupyter_server", tmp, root, env, TOKEN) as url:
            yield Server(url, root, model, Path(env["OMNIKERNEL_STORE"]))


def test_each_notebook_keeps_exactly_its_own_conversation(server):
    # The bug as users met it: Untitled.ipynb has a conversation, gets renamed, and the next
    # new notebook is called Untitled.ipynb again.
    first_path = server.new_notebook()
    assert first_path == "Untitled.ipynb"
    first = server.open(first_path)
    shown, _ = first.prompt("Please remember the codeword FALCON-7.")
    assert "Noted." in shown
    falcon_session = first.session_id()
    server.rename(first_path, "analysis.ipynb")
    first.follow_rename("analysis.ipynb")
    first.close()

    second_path = server.new_notebook()
    assert second_path == "Untitled.ipynb"  # the same name, a different notebook
    second = server.open(second_path)
    shown, sent = second.prompt("Please remember OSPREY-2. What is the codename?")
    assert "Handed over" not in shown and "FALCON-7" not in sent
    assert second.session_id() != falcon_session

    # The renamed notebook's next kernel continues its own conversation.
    renamed = server.open("analysis.ipynb")
    assert renamed.session_id() == falcon_session
    shown, sent = renamed.prompt("What is the codename?")
    assert "Handed over to claude: 1 earlier turn by claude" in shown
    assert "FALCON-7" in sent and "OSPREY-2" not in sent

    # Duplicate: the copy starts from the original's history in a session of its own.
    copy_path = server.duplicate("analysis.ipynb")
    assert copy_path == "analysis-Copy1.ipynb"
    copy = server.open(copy_path)
    copy_session = copy.session_id()
    assert copy_session != falcon_session
    status, about = copy.run("%session")
    assert f"forked from {falcon_session}" in about
    shown, sent = copy.prompt("What is the codename? Also remember HERON-3.")
    assert "Handed over to claude: 2 earlier turns by claude" in shown and "FALCON-7" in sent
    # The original never hears of the copy's turns.
    shown, sent = renamed.prompt("What is the codename now?")
    assert "HERON-3" not in sent and "Handed over" not in shown
    store = SessionStore(server.store)
    prompts = [
        e.data["prompt"] for e in store.events(falcon_session, kinds=(EventKind.TURN_START,))
    ]
    assert len(prompts) == 3 and not any("HERON-3" in p for p in prompts)
    copy.close()
    renamed.close()

    # Move into a folder: same notebook, same session.
    server.api("PUT", "/api/contents/projects", {"type": "directory"})
    server.rename("analysis.ipynb", "projects/analysis.ipynb")
    moved = server.open("projects/analysis.ipynb")
    assert moved.session_id() == falcon_session
    about = moved.run("%session")[1]
    assert "3 turn(s)" in about and "projects/analysis.ipynb (file id" in about
    moved.close()
    row = store.session(falcon_session)
    assert row is not None and row["notebook"].endswith("projects/analysis.ipynb")

    # Delete and create again at the same path: a new notebook, a clean session.
    osprey_session = second.session_id()
    second.close()
    server.api("DELETE", f"/api/contents/{second_path}")
    again_path = server.new_notebook()
    assert again_path == second_path
    again = server.open(again_path)
    assert again.session_id() not in (osprey_session, falcon_session)
    shown, sent = again.prompt("What is the codename?")
    assert "Handed over" not in shown and "OSPREY-2" not in sent and "FALCON-7" not in sent
    again.close()
    store.close()


def test_session_magic_starts_new_forks_and_attaches(server):
    path = server.new_notebook()
    nb = server.open(path)
    nb.prompt("Please remember KESTREL-5.")
    own = nb.session_id()
    status, shown = nb.run("%session new")
    assert status == "ok" and "New session" in shown
    fresh = nb.session_id()
    assert fresh != own
    _, sent = nb.prompt("What is the codename?")
    assert "KESTREL-5" not in sent

    status, shown = nb.run(f"%session {own}")
    assert status == "ok" and f"Attached session {own} (1 turn(s))" in shown
    status, shown = nb.run("%session fork kestrel-fork")
    assert status == "ok" and f"Forked {own} into kestrel-fork" in shown
    shown, sent = nb.prompt("What is the codename?")
    assert "KESTREL-5" in sent and "Handed over to claude" in shown
    status, shown = nb.run("%session ../../escape")
    assert status == "error" and "is not a session name" in shown
    status, shown = nb.run("%session fork a b")
    assert status == "error" and "%session new" in shown
    # The notebook keeps the session it was switched to, in a restarted kernel...
    nb.restart()
    assert nb.session_id() == "kestrel-fork"
    nb.close()
    # ...and in its next one.
    reopened = server.open(path)
    assert reopened.session_id() == "kestrel-fork"
    status, listing = reopened.run("%session list")
    assert status == "ok" and own in listing and "kestrel-fork" in listing
    reopened.close()
    store = SessionStore(server.store)
    assert store.last_turn(own) == 1  # the fork's turns went to the fork only
    store.close()


def test_a_path_derived_session_migrates_to_its_notebook(server):
    cell = "cell-that-ran-the-old-turn"
    path = server.root / "old.ipynb"
    path.write_text(
        json.dumps(
            {
                "cells": [
                    {
                        "id": cell,
                        "cell_type": "code",
                        "source": "Remember PLOVER-9.",
                        "metadata": {},
                        "outputs": [],
                        "execution_count": 1,
                    }
                ],
                "metadata": {"kernelspec": {"name": "omnikernel", "display_name": "Omnigent"}},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )
    # What an older omnikernel stored for this notebook, under the id derived from its path.
    legacy, _ = legacy_session_id({"JPY_SESSION_NAME": str(path)}, server.root)
    store = SessionStore(server.store)
    store.open_session(legacy, str(path))
    for event in (
        Event(EventKind.TURN_START, {"prompt": "Remember PLOVER-9."}),
        ev.text("Noted."),
        Event(EventKind.TURN_END, {"status": "completed"}),
    ):
        store.append(event.stamped(session_id=legacy, harness="claude", turn=1, cell=cell))
    store.close()

    nb = server.open("old.ipynb")
    status, about = nb.run("%session")
    assert f"Session {legacy}: 1 turn(s)" in about and "migrated" in about
    shown, sent = nb.prompt("What is the codename?")
    assert "Handed over to claude: 1 earlier turn" in shown and "PLOVER-9" in sent
    nb.close()


@pytest.fixture
def model():
    require_claude()
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as server:
        yield server


def test_without_a_server_each_run_is_new_unless_named(model, workdir, start_kernel):
    env = {
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": "k",
        "JPY_SESSION_NAME": str(workdir / "Untitled.ipynb"),
    }
    first = start_kernel(workdir, **env)
    result = first.execute("Please remember WREN-4.")
    assert result.status == "ok" and "is new for this run" in result.text
    assert "%session" in result.text and "OMNIKERNEL_SESSION_ID" in result.text
    assert first.execute("%session wren").status == "ok"  # name it, to continue it later
    first.execute("Please remember WREN-4 again.")
    first.stop()

    # Same folder, same notebook path: still a new session, nothing handed over.
    second = start_kernel(workdir, **env)
    before = len(model.requests)
    result = second.execute("What is the codename?")
    assert "is new for this run" in result.text and "Handed over" not in result.text
    assert not any("WREN-4" in str(r.body) for r in model.requests[before:])
    # Named: the run continues the named session, and the cell says so.
    assert "Attached session wren (1 turn(s))" in second.execute("%session wren").text
    result = second.execute("What is the codename?")
    assert "Handed over to claude: 1 earlier turn" in result.text
    assert "WREN-4 again" in str(model.requests[-1].body)
    second.stop()

    named = start_kernel(workdir, OMNIKERNEL_SESSION_ID="wren", **env)
    result = named.execute("What is the codename?")
    assert "Session wren, named by OMNIKERNEL_SESSION_ID" in result.text
    assert "Handed over to claude: 2 earlier turns" in result.text
