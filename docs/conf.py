"""Sphinx configuration: Markdown pages (MyST) and the example notebooks (myst-nb), executed
during the build by `_ext/run_notebooks.py` against the offline rehearsal model."""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path[:0] = [str(DOCS / "_ext"), str(REPO)]
# The notebooks' kernels run this checkout's code too, whatever the environment installed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
# The pinned agent CLIs of `make install`, first on PATH as `make test` puts them.
os.environ["PATH"] = f"{REPO / '.tools' / 'node_modules' / '.bin'}{os.pathsep}{os.environ['PATH']}"

project = "omnikernel"
author = "the omnikernel authors"
copyright = "2026, the omnikernel authors"

extensions = ["myst_nb", "run_notebooks"]
exclude_patterns = ["_build", "notebooks/.ipynb_checkpoints", "**/.ipynb_checkpoints"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 4

# The notebooks are executed by run_notebooks (an Approver answers their cards, in a temporary
# copy of their folder); myst-nb renders what that run produced.
nb_execution_mode = "off"
nb_execution_raise_on_error = True
omnikernel_notebooks_dir = "notebooks"

html_theme = "furo"
html_title = "omnikernel"
