"""The `omnikernel` command: sessions, export, prune (`main`) and attach (`attach`); other
packages add commands through the ``omnikernel.commands`` entry point group."""
