"""Starting the Crossbar router with the project's config: port override, absolute paths, readiness check."""

import json
import socket
import sys
import time
from pathlib import Path

from components.mesh.credentials import PROJECT_ROOT
from components.mesh.errors import ConfigError, Unavailable

PROJECT_CONFIG = PROJECT_ROOT / ".crossbar" / "config.json"
CROSSBAR = Path(sys.executable).with_name("crossbar")


def runtime_config(port, secrets_file=None, source=PROJECT_CONFIG, tls=None, tuning=None):
    """The project's router config with the port set, relative paths made absolute, TLS and tuning overrides if given."""
    config = json.loads(Path(source).read_text())
    cbdir = Path(source).resolve().parent
    for worker in config["workers"]:
        options = worker.setdefault("options", {})
        options["pythonpath"] = [str((cbdir / path).resolve()) for path in options.get("pythonpath", [])]
        for transport in worker.get("transports", []):
            transport["endpoint"]["port"] = port
            if tls is not None:
                from components.node.tls import endpoint_tls

                transport["endpoint"]["tls"] = endpoint_tls(tls)
            for path in transport.get("web", {}).get("paths", {}).values():
                if "directory" in path:
                    path["directory"] = str((cbdir / path["directory"]).resolve())
        for component in worker.get("components", []):
            if secrets_file:
                component.setdefault("extra", {})["secrets_file"] = str(Path(secrets_file).resolve())
            if tuning:
                component.setdefault("extra", {})["tuning"] = dict(tuning)
    return config


def write_runtime_cbdir(port, secrets_file=None, base=None, tls=None, tuning=None):
    """Write a runtime node directory for this port and return its path."""
    cbdir = Path(base or PROJECT_ROOT / ".crossbar" / "runtime") / str(port)
    cbdir.mkdir(parents=True, exist_ok=True)
    stale_pid = cbdir / "node.pid"
    if stale_pid.exists():
        stale_pid.unlink()  # crossbar refuses to start over a pid file left by a killed node
    (cbdir / "config.json").write_text(json.dumps(runtime_config(port, secrets_file, tls=tls, tuning=tuning), indent=2))
    return cbdir


def router_command(port, secrets_file=None, base=None, loglevel="warn", tls=None, tuning=None):
    """The crossbar command line that serves the project's config on port (over TLS when tls files are given)."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"port must be between 1 and 65535, got {port}")
    cbdir = write_runtime_cbdir(port, secrets_file, base, tls, tuning)
    return [str(CROSSBAR), "start", "--cbdir", str(cbdir), "--loglevel", loglevel]


def port_open(port, host="127.0.0.1"):
    """Whether something accepts TCP connections on host:port."""
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def wait_for_port(port, process=None, timeout=30.0):
    """Block until the router accepts connections; fail early if its process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if process is not None and process.poll() is not None:
            raise Unavailable(f"router exited with code {process.returncode} before opening port {port}")
        time.sleep(0.1)
    raise Unavailable(f"router did not open port {port} within {timeout:.0f} s")


def free_port():
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
