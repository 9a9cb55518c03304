"""An agent CLI as a process: its lines in and out (`process`) and what a stop ends of it
(`turnstop`). Sandboxing it is one layer up (`omnikernel.sandbox`)."""
