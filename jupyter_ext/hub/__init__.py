"""omnikernel under JupyterHub: the share page under the user's server, for named hub users.

- `authorizer`: the single-user server's Authorizer: the owner may do everything, a visitor a
  JupyterHub share lets in may reach the share page and nothing else.
- `handlers`: the share page at ``<base_url>omnikernel/share/...``, answering to the hub
  identity of whoever opens it, checked against the session's grants by name and group.
"""
