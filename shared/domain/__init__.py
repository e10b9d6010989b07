"""Pure code: ACS events, payload builders, preview encryption, quiet hours; no storage or edges."""
