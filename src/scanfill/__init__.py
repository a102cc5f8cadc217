"""scanfill: the complete Canton Network ledger history from Splice Scan into PostgreSQL."""

__version__ = "0.1.0"
