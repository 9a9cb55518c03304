"""The kernel application: IPython's kernel app, serving `OmniKernel`, reading
`omnikernel_config.py` from the Jupyter config path (e.g. ``~/.jupyter/``) as well as from the
IPython profile."""

from __future__ import annotations

from ipykernel.kernelapp import IPKernelApp
from jupyter_core.paths import jupyter_config_path
from traitlets import default

from .kernel import OmniKernel


class OmniKernelApp(IPKernelApp):
    name = "omnikernel"

    @default("kernel_class")
    def _kernel_class_default(self) -> type[OmniKernel]:
        return OmniKernel

    @default("config_file_paths")
    def _config_file_paths_default(self) -> list[str]:
        return list(reversed(jupyter_config_path()))
