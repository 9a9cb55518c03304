"""One notebook's agent session: which session a kernel continues (`identity`), the session
itself (`core`, composed of `upstreams`: credentials and the gateway; `spend`: metering and the
budget; `decisions`: policy, approvals and pauses; `turns`: running and stopping turns) and the
handoff that lets a harness take over another's conversation (`handoff`)."""
