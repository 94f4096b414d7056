"""The typed connection config every component process builds once from flags and NERVE_* variables."""

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional
from urllib.parse import urlparse

from components.mesh import credentials
from components.mesh.errors import ConfigError
from components.mesh.tuning import COMPONENT_DEFAULTS, checked_settings

LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
DEFAULT_ROUTER = "rs://127.0.0.1:8080"
URI_COMPONENT = re.compile(r"^[a-z0-9_-]+$")


def uri_safe(name):
    """A name made usable as one WAMP URI component: lower case, [a-z0-9_-] only."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")
    return cleaned or "unnamed"


def default_authid(role):
    """An authid that tells who a process is: role, host and process id."""
    return f"{role}-{uri_safe(socket.gethostname())}-{os.getpid()}"


@dataclass(frozen=True)
class MeshConfig:
    """Where and as whom a component joins the mesh."""

    role: str
    router: str = DEFAULT_ROUTER
    realm: str = "nerve"
    authid: Optional[str] = None
    ticket: Optional[str] = field(default=None, repr=False)
    secrets_file: Optional[Path] = None
    log_level: str = "info"
    ca_file: Optional[Path] = None
    nice: int = 0
    tuning: Mapping[str, bool] = field(default_factory=lambda: COMPONENT_DEFAULTS)

    def __post_init__(self):
        parsed = urlparse(self.router)
        if parsed.scheme not in ("ws", "wss", "rs", "rss") or not parsed.hostname:
            raise ConfigError(f"router URL {self.router!r} must look like ws://HOST:PORT/ws or rs://HOST:PORT")
        if not re.match(r"^[a-z0-9_.]+$", self.realm):
            raise ConfigError(f"realm {self.realm!r} may hold only a-z, 0-9, '_' and '.'")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log level {self.log_level!r} must be one of {', '.join(LOG_LEVELS)}")
        if type(self.nice) is not int or not 0 <= self.nice <= 19:
            raise ConfigError(f"nice must be an integer from 0 to 19, got {self.nice!r}")
        if self.role not in credentials.BACKEND_ROLES and self.role != "anonymous":
            raise ConfigError(f"role {self.role!r} must be one of {credentials.BACKEND_ROLES} or anonymous")
        object.__setattr__(self, "tuning", checked_settings(self.tuning, COMPONENT_DEFAULTS, "tuning"))
        if self.authid is None:
            object.__setattr__(self, "authid", default_authid(self.role))
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ConfigError(f"CA file {self.ca_file} does not exist")

    @property
    def is_rawsocket(self):
        """Whether the router URL names a RawSocket (rs://, rss://) transport."""
        return urlparse(self.router).scheme in ("rs", "rss")

    def transport(self):
        """The autobahn Component transport: reconnect forever with a short capped backoff."""
        transport = {
            "url": self.router,
            "max_retries": -1,
            "initial_retry_delay": 0.25,
            "max_retry_delay": 0.5,  # a restarted router is rejoined within half a second of its start
            "retry_delay_growth": 1.5,
            "retry_delay_jitter": 0.1,
        }
        if self.is_rawsocket:
            transport.update(type="rawsocket", serializer="msgpack")
        else:
            transport.update(type="websocket", serializers=["msgpack", "json"])
        parsed = urlparse(self.router)
        if parsed.scheme in ("wss", "rss"):
            # Verify the router against the given CA (e.g. the development CA), else the system's roots.
            tls = {"hostname": parsed.hostname, "trust_root": str(self.ca_file)} if self.ca_file else True
            transport["endpoint"] = {"type": "tcp", "host": parsed.hostname, "port": parsed.port or 443, "tls": tls}
        return transport

    def authentication(self):
        """The autobahn authentication dict: a ticket for a backend role, nothing for anonymous."""
        if self.role == "anonymous":
            return None
        ticket = self.ticket
        if ticket is None:
            role_secrets = credentials.load_or_create(credentials.secrets_path(self.secrets_file))
            ticket = credentials.ticket_for(role_secrets[self.role], self.authid)
        return {"ticket": {"authid": self.authid, "ticket": ticket, "authextra": {"role": self.role}}}
