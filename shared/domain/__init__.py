"""Pure code: ACS events, the device model, payload builders, preview encryption, quiet hours;
no storage or edges."""
