"""What people read: agent text made safe (`sanitize`), events as cell output (`render`) and
whole sessions written out (`export`). Pure: no I/O but what a caller hands in."""
