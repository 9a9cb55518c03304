"""The kernel application: IPython's kernel app, serving `OmniKernel`, reading
`omnikernel_config.py` from the Jupyter config path (e.g. ``~/.jupyter/``) as well as from the
IPython profile."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from ipykernel.kernelapp import IPKernelApp
from jupyter_core.paths import jupyter_config_path
from traitlets import default
from traitlets.config.loader import PyFileConfigLoader

from omnikernel.kernel.kernel import CONFIG_PROBLEMS, OmniKernel


class OmniKernelApp(IPKernelApp):
    name = "omnikernel"

    @default("kernel_class")
    def _kernel_class_default(self) -> type[OmniKernel]:
        return OmniKernel

    @default("config_file_paths")
    def _config_file_paths_default(self) -> list[str]:
        return list(reversed(jupyter_config_path()))

    def load_config_file(self, *args: Any, **kwargs: Any) -> None:
        """Load the config as IPython does (which only logs a broken file), and note each
        broken `omnikernel_config.py`, so the notebook's first cell says so."""
        super().load_config_file(*args, **kwargs)
        for folder in self.config_file_paths:
            path = Path(folder) / "omnikernel_config.py"
            if not path.is_file():
                continue
            try:
                PyFileConfigLoader(path.name, path=str(path.parent)).load_config()
            except Exception as exc:
                lines = [
                    f.lineno
                    for f in traceback.extract_tb(exc.__traceback__)
                    if f.filename == str(path)
                ]
                line = exc.lineno if isinstance(exc, SyntaxError) else (lines or [None])[-1]
                where = f" (line {line})" if line else ""
                CONFIG_PROBLEMS.append(
                    f"⚠ The config file {path} is broken and was left out{where}: "
                    f"{type(exc).__name__}: {exc}. The kernel runs with the other settings; "
                    f"fix the file, then restart the kernel."
                )
