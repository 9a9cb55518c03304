"""Everything kept on disk, in one SQLite file: the sessions' events (`sessions`), what
share links, answers and prompts the share server and kernels agree on (`shares`), the lock
that keeps a session to one turn at a time across kernels (`turnlock`), and the redaction every
event passes before it is stored (`redact`)."""
