"""One notebook's agent session: which session a kernel continues (`identity`), the session
itself (`core`: its harnesses, gateway, policy, pauses and turns) and the handoff that lets a
harness take over another's conversation (`handoff`)."""
