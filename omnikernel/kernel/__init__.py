"""The Jupyter side: everything that imports IPython. The kernel (`kernel`: a cell to an agent
or to Python), its app, the magics (one module per family, `magics`), routing a cell
(`routing`), Python values in prompts (`interpolate`), a turn as a Python value
(`agent_result`), the approval card and spend gauge (`widgets`) and co-drivers' prompts run as
turns (`codrive`). The top layer of the package but the command line."""
