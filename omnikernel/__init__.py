"""The Omnigent kernel: a Jupyter-native meta-harness for coding agents."""

__version__ = "0.1.0"
