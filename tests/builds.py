"""Flags for builds in tests: small enough to train in seconds."""

FAST = ["--quiet", "--k", "40", "--positive-k", "10", "--gnn-epochs", "15", "--threads", "1"]
