"""Table Storage: the only importers of azure-data-tables and of the lean table client.

:mod:`~shared.storage.tables` is the port every adapter uses (connection, key encoding, storage
errors); one adapter per table (devices, deliveries, identities, inbox, renewal schedule and
sweeps, registry purge, token proofs).
"""
