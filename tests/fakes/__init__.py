"""In-memory fakes of the storage ports, one per port, one module each.

Each fake keeps the state its adapter keeps (tests assert resulting state, not calls) and follows
the adapter's rules; the adapter's contract tests under tests/integration run against the fake as
well as against Azurite (with each Table Storage client), so the two cannot drift apart.
"""
