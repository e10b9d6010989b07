"""Use cases: each takes its collaborators (ports) as parameters; ``shared.wiring`` supplies them."""
