"""Operational commands around a load: prepare/restore/abort, status, verify, doctor, tune, report, metrics."""
