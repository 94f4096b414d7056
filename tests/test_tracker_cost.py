"""Tracker cost: the `nerve tracker` process loads no NumPy, and still publishes to a real router."""

import json
import subprocess
import sys

import psutil
import pytest_twisted
from autobahn.wamp.types import SubscribeOptions

from components.testing.live import EventLog, join, wait_until

# Runs a `nerve` command's own code (options, config, component objects) up to the point where it would
# join the router, then prints the modules loaded by then.
LOADED_BY_COMMAND = """
import json, sys
from components.cli import main as cli

def report(targets, config, mesh, name):
    print(json.dumps([name for name, module in sys.modules.items() if module is not None]))
    sys.exit(0)

cli.run_or_exit = report
cli.main(sys.argv[1:])
"""


def modules_loaded_by(*args):
    """The modules a `nerve` command has loaded when it is about to join the router."""
    result = subprocess.run([sys.executable, "-c", LOADED_BY_COMMAND, *args], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def test_tracker_command_loads_no_numpy():
    loaded = modules_loaded_by("tracker")
    assert {"components.monitor.tracker", "components.mesh.session", "autobahn.wamp.types", "psutil"} <= loaded  # the real path ran
    assert not {name for name in loaded if name.split(".")[0] in ("numpy", "bjdata", "_bjdata", "argon2", "passlib")}


def test_analyzer_command_still_loads_numpy():
    # Skipping modules is the tracker's alone: the analyzer computes with NumPy.
    assert "numpy" in modules_loaded_by("analyzer")


@pytest_twisted.inlineCallbacks
def test_running_tracker_publishes_measurements_without_numpy_mapped(router, start):
    tracker = start("tracker", "--host-id", "cost-host", "--authid", "cost-host", "--interval", "0.5")
    session = yield join(router.rawsocket_url, "operator", "cost-test", router.ticket("operator", "cost-test"))
    try:
        events = EventLog()
        # The prefix an orchestrator subscribes to: the tracker buffers until someone listens on it.
        yield session.subscribe(events, "nerve.measure.", options=SubscribeOptions(match="prefix", details_arg="details"))
        topic = "nerve.measure.cost-host"
        measured = yield wait_until(lambda: len(events.payloads(topic)) >= 2 and events.payloads(topic), timeout=20,
                                    message="two measurements from the tracker")
    finally:
        yield session.leave()
    assert {"cpu", "mem", "load1", "procs"} <= set(measured[-1]["metrics"]), tracker.output()
    # NumPy's compiled core is mapped into any process that imported numpy, whatever the import path.
    mapped = {region.path for region in psutil.Process(tracker.process.pid).memory_maps()}
    assert not [path for path in mapped if "numpy" in path or "_bjdata" in path], tracker.output()
