"""Test helpers shipped with the package: the scripted fake model server."""
