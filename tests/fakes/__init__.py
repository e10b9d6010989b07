"""In-memory fakes, one home each: one module per storage port, and the other collaborators the
unit tests fake (the APNs client, the APNs server the client itself talks to, ACS Identity, the
clock).

Each storage fake keeps the state its adapter keeps (tests assert resulting state, not calls) and
follows the adapter's rules; the adapter's contract tests under tests/integration run against the
fake as well as against Azurite (with each Table Storage client), so the two cannot drift apart.
"""
