"""`make bench`: every speed and memory figure against a baseline measured in the same run."""
