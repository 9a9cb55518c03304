"""Executes the example notebooks while the docs build reads them, so the site shows what they
do today: each runs from a temporary copy of `notebooks/` with the Omnigent kernel, a private
store and state dir and no model credentials (the offline rehearsal model answers, at $0; no
network), and an `Approver` answers its approval cards from the store the way
`omnikernel attach --approve` does.

myst-nb's own executor cannot do this: it runs a notebook in its source folder (or in an empty
temporary one, without the files beside it), with the build's environment, and nobody would
answer a card. So this extension executes each notebook with the tests' machinery
(`omnikernel.testing.notebooks`) on Sphinx's `source-read` and hands myst-nb the executed
notebook, which renders it with `nb_execution_mode = "off"`. A cell error stops the build.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)


def execute(app: Sphinx, docname: str, source: list[str]) -> None:
    folder = app.config.omnikernel_notebooks_dir
    if not docname.startswith(folder + "/"):
        return
    from nbclient.exceptions import CellExecutionError

    from omnikernel.testing.notebooks import Approver, offline_env, run_notebook

    notebooks = Path(app.srcdir, folder).resolve()
    name = docname.removeprefix(folder + "/") + ".ipynb"
    tmp = Path(tempfile.mkdtemp(prefix="omnikernel-docs-"))
    started = time.monotonic()
    try:
        env = offline_env(tmp)
        approver = Approver(Path(env["OMNIKERNEL_STORE"]))
        _, nb = run_notebook(notebooks, name, tmp, env, approver)
    except CellExecutionError as exc:
        raise ExtensionError(f"{folder}/{name}: a cell failed\n{exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"executed {folder}/{name} in {time.monotonic() - started:.1f} s")
    source[0] = nbformat.writes(nb)


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("omnikernel_notebooks_dir", "notebooks", "env")
    app.connect("source-read", execute)
    return {"parallel_read_safe": False, "parallel_write_safe": True}
