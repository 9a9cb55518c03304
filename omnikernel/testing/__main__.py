"""`python -m omnikernel.testing`: the same as `python -m omnikernel.rehearsal` (kept for
scripts written before the rehearsal model had a module of its own)."""

from omnikernel.rehearsal.__main__ import main

if __name__ == "__main__":
    main()
