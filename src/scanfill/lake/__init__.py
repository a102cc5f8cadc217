"""The lake tier: the ledger as Delta Lake tables on a filesystem or object store."""
