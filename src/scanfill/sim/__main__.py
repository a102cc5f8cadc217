"""`python -m scanfill.sim CONFIG_JSON`: the child process behind `Simulator(mode="process")`."""

import sys

from scanfill.sim.config import SimConfig
from scanfill.sim.runner import announce_json, serve_forever

serve_forever(SimConfig.from_json(sys.argv[1]), announce=announce_json)
