"""A local Scan API over a deterministic synthetic ledger (see `scanfill sim --help`)."""

from scanfill.sim.config import FaultConfig, InstanceConfig, SimConfig
from scanfill.sim.ledger import Ledger, LedgerConfig, MigrationSpec, UpdateHeader
from scanfill.sim.runner import Simulator, serve_forever

__all__ = [
    "FaultConfig",
    "InstanceConfig",
    "Ledger",
    "LedgerConfig",
    "MigrationSpec",
    "SimConfig",
    "Simulator",
    "UpdateHeader",
    "serve_forever",
]
