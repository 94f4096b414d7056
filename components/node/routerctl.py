"""Starting the Crossbar router with the project's config: port override, absolute paths, readiness check."""

import ipaddress
import json
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from components.mesh.credentials import PROJECT_ROOT
from components.mesh.errors import ConfigError, Unavailable

PROJECT_CONFIG = PROJECT_ROOT / ".crossbar" / "config.json"
CROSSBAR = Path(sys.executable).with_name("crossbar")
DEFAULT_LISTEN = "127.0.0.1"


def checked_listen(address):
    """The listen address as Crossbar takes it (an IPv4 or IPv6 address); ConfigError for anything else."""
    try:
        return str(ipaddress.ip_address(str(address).strip().strip("[]")))
    except ValueError:
        raise ConfigError(f"listen address {address!r} must be an IP address of this machine: 127.0.0.1 (default, "
                          f"this machine only), 0.0.0.0 (every IPv4 interface), :: (every interface) or one "
                          f"interface's address such as 192.168.1.10") from None


def check_bindable(listen):
    """ConfigError unless this machine has the address (binding a free port on it works)."""
    family = socket.AF_INET6 if ":" in listen else socket.AF_INET
    with socket.socket(family) as probe:
        try:
            probe.bind((listen, 0))
        except OSError as error:
            raise ConfigError(f"listen address {listen} is not an address of this machine ({error.strerror}); "
                              f"use 0.0.0.0 for every interface or one from `ip -brief address`") from None


def is_wildcard(listen):
    """Whether the listen address means every interface."""
    return ipaddress.ip_address(listen).is_unspecified


def connect_host(listen):
    """The address a process on this machine connects to for a router listening on listen."""
    address = ipaddress.ip_address(listen)
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "::1"
    return str(address)


def url_host(host):
    """host as it goes into a URL (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


def origin_pattern(origin):
    """An Origin (scheme://host[:port], '*' allowed in the host) as Autobahn compares it: scheme://host:port, the
    port always written out. ConfigError for anything that is not an http(s) origin."""
    text = str(origin).strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise ConfigError(f"allowed origin {origin!r} is not an origin: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query \
            or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"allowed origin {origin!r} must look like https://HOST or http://HOST:PORT (scheme, host "
                          f"and port only, as a browser sends it in the Origin header; '*' may stand for part of the host)")
    return f"{parts.scheme}://{parts.hostname}:{port or {'http': 80, 'https': 443}[parts.scheme]}"


def _interface_addresses(version):
    # The machine's own addresses, for a router listening on every interface. psutil is a nerve dependency (the
    # tracker's); without it only the loopback names and the host name count as the router's own.
    try:
        import psutil
    except ImportError:
        return []
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == family and "%" not in address.address:
                found.append(address.address)
            elif version == 6 and address.family == socket.AF_INET:
                found.append(address.address)  # a dual-stack "::" socket takes IPv4 connections too
    return found


def own_origins(port, listen=DEFAULT_LISTEN):
    """The origins of the router's own pages: the dashboard as a browser on this machine, or elsewhere through the
    listen address (every interface address and the host name when listening on all), reaches it."""
    hosts = ["127.0.0.1", "localhost"]
    address = ipaddress.ip_address(listen)
    if address.version == 6:
        hosts.append("::1")
    if address.is_unspecified:
        hosts += [socket.gethostname().lower(), *_interface_addresses(address.version)]
    else:
        hosts.append(str(address))
    unique = list(dict.fromkeys(hosts))
    return [f"{scheme}://{host}:{port}" for host in unique for scheme in ("http", "https")]


def runtime_config(port, secrets_file=None, source=PROJECT_CONFIG, tls=None, tuning=None, listen=DEFAULT_LISTEN,
                   allowed_origins=()):
    """The project's router config with the port set, relative paths made absolute, TLS and tuning overrides if given,
    listening on `listen`, its WebSocket taking browsers only from its own origins and `allowed_origins`."""
    config = json.loads(Path(source).read_text())
    cbdir = Path(source).resolve().parent
    listen = checked_listen(listen)
    origins = list(dict.fromkeys(own_origins(port, listen) + [origin_pattern(origin) for origin in allowed_origins]))
    for worker in config["workers"]:
        options = worker.setdefault("options", {})
        options["pythonpath"] = [str((cbdir / path).resolve()) for path in options.get("pythonpath", [])]
        for transport in worker.get("transports", []):
            transport["endpoint"]["port"] = port
            transport["endpoint"]["interface"] = listen
            if ipaddress.ip_address(listen).version == 6:
                transport["endpoint"]["version"] = 6
            websockets = list(transport.get("websocket", {}).values())
            websockets += [path for path in transport.get("paths", {}).values() if path.get("type") == "websocket"]
            for websocket in websockets:
                # Cross-site WebSocket hijacking: a page elsewhere must not open a session in a visitor's browser.
                # Clients that send no Origin (components, the CLI) are not affected.
                websocket_options = websocket.setdefault("options", {})
                websocket_options["allowed_origins"] = origins
                websocket_options["allow_null_origin"] = False
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


def runtime_dir(port, base=None):
    """The router's runtime node directory for this port (`nerve up` keeps its children's logs there too)."""
    return Path(base or PROJECT_ROOT / ".crossbar" / "runtime") / str(port)


def write_runtime_cbdir(port, secrets_file=None, base=None, tls=None, tuning=None, listen=DEFAULT_LISTEN,
                        allowed_origins=()):
    """Write a runtime node directory for this port and return its path."""
    cbdir = runtime_dir(port, base)
    cbdir.mkdir(parents=True, exist_ok=True)
    stale_pid = cbdir / "node.pid"
    if stale_pid.exists():
        stale_pid.unlink()  # crossbar refuses to start over a pid file left by a killed node
    config = runtime_config(port, secrets_file, tls=tls, tuning=tuning, listen=listen, allowed_origins=allowed_origins)
    (cbdir / "config.json").write_text(json.dumps(config, indent=2))
    return cbdir


def router_command(port, secrets_file=None, base=None, loglevel="warn", tls=None, tuning=None, listen=DEFAULT_LISTEN,
                   allowed_origins=()):
    """The crossbar command line that serves the project's config on port (over TLS when tls files are given)."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"port must be between 1 and 65535, got {port}")
    cbdir = write_runtime_cbdir(port, secrets_file, base, tls, tuning, listen, allowed_origins)
    return [str(CROSSBAR), "start", "--cbdir", str(cbdir), "--loglevel", loglevel]


def port_open(port, host="127.0.0.1"):
    """Whether something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def wait_for_port(port, process=None, timeout=30.0, host="127.0.0.1"):
    """Block until the router accepts connections; fail early if its process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host):
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
