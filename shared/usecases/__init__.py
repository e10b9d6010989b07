"""Use cases: each takes its collaborators (ports) as parameters; ``shared.wiring`` wires them."""
