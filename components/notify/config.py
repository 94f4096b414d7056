"""The notifier's TOML config, typed and validated: channels, routes, the dashboard's address.

A bad file stops `nerve notifier` at start with `FILE:LINE: field X: what is wrong`. tomllib reports
lines only for syntax errors, so for a value that parses but cannot be used the line of its key is
found in the file's text (`SourceLines`): the key's own line inside its `[channels.NAME]` or its
`[[routes]]` entry, or the table's header when the key is missing.
"""

import os
import re
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Mapping, Optional, Tuple
from urllib.parse import urlparse

from components.mesh.config import MeshConfig
from components.mesh.errors import ConfigError

CHANNEL_TYPES = ("webhook", "email", "alertmanager")
# The levels an alert record can have (docs/alerts.md); a route's `levels` takes these.
ALERT_LEVELS = ("MEDIUM", "HIGH", "DOWN", "REBOOT")
DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8080/"
DEFAULT_GROUP_WAIT = 10.0
DEFAULT_REPEAT_INTERVAL = 4 * 3600.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_RETRY_DELAY = 30.0
DEFAULT_CONCURRENCY = 8
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*)+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_METRIC = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_HOST_GLOB = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]{1,128}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

TOP_KEYS = ("dashboard_url", "max_retry_delay", "channels", "routes")
CHANNEL_KEYS = {
    "webhook": ("type", "url", "timeout", "concurrency"),
    "email": ("type", "smtp", "from", "to", "starttls", "username", "password_env", "ca_file", "timeout", "concurrency"),
    "alertmanager": ("type", "url", "timeout", "concurrency"),
}
ROUTE_KEYS = ("hosts", "metrics", "levels", "channels", "group_wait", "repeat_interval", "send_resolved")


@dataclass(frozen=True)
class Channel:
    """Where notifications go: its name, type and how long one delivery may take."""

    name: str
    type: str
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int = DEFAULT_CONCURRENCY  # messages in flight at once while the channel is healthy


@dataclass(frozen=True)
class WebhookChannel(Channel):
    """POST {"alerts": [...]} as JSON to url."""

    url: str = ""


@dataclass(frozen=True)
class AlertmanagerChannel(Channel):
    """POST to url's /api/v2/alerts (Alertmanager's v2 API)."""

    url: str = ""

    @property
    def alerts_url(self):
        """The v2 alerts endpoint under url."""
        return self.url.rstrip("/") + "/api/v2/alerts"


@dataclass(frozen=True)
class EmailChannel(Channel):
    """One mail per message through an SMTP server, optionally with STARTTLS and a login."""

    host: str = ""
    port: int = 25
    sender: str = ""
    to: Tuple[str, ...] = ()
    starttls: bool = False
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)  # read from password_env once, at config build
    ca_file: Optional[str] = None


@dataclass(frozen=True)
class Route:
    """Which alerts (hosts glob, metric families, levels) go to which channels, and how often."""

    channels: Tuple[str, ...]
    hosts: Tuple[str, ...] = ("*",)
    metrics: Tuple[str, ...] = ()  # empty: every metric
    levels: Tuple[str, ...] = ()  # empty: every level
    group_wait: float = DEFAULT_GROUP_WAIT
    repeat_interval: float = DEFAULT_REPEAT_INTERVAL
    send_resolved: bool = True

    def matches(self, record):
        """Whether an alert record (host_id, metric, level) falls under this route."""
        host, metric, level = record.get("host_id", ""), record.get("metric", ""), record.get("level")
        if not any(fnmatchcase(host, pattern) for pattern in self.hosts):
            return False
        if self.metrics and metric not in self.metrics and metric.split(".", 1)[0] not in self.metrics:
            return False
        return not self.levels or level in self.levels


@dataclass(frozen=True)
class NotifierConfig:
    """Everything `nerve notifier` runs with: the mesh connection, channels, routes, where the outbox lives."""

    mesh: MeshConfig
    path: str
    channels: Mapping[str, Channel]
    routes: Tuple[Route, ...]
    data_dir: str = ".nerve"
    dashboard_url: str = DEFAULT_DASHBOARD_URL
    max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY

    @property
    def outbox_path(self):
        """The SQLite outbox under the data directory."""
        return Path(self.data_dir) / "notifier" / "outbox.sqlite3"

    def link(self, relative):
        """A dashboard link made absolute: relative ("/#host=web-01") joined to dashboard_url."""
        relative = str(relative or "")
        if urlparse(relative).scheme:
            return relative
        return self.dashboard_url.rstrip("/") + "/" + relative.lstrip("/")


class SourceLines:
    """Where keys of the TOML file are, by reading its text: top-level keys, [channels.NAME] and [[routes]] entries."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")

    def __init__(self, text):
        self.lines = text.splitlines()
        self.headers = []  # (line number, is array entry, dotted name without quotes or spaces)
        for number, line in enumerate(self.lines, 1):
            match = self._HEADER.match(line)
            if match:
                name = ".".join(part.strip().strip('"').strip("'") for part in match.group(2).split("."))
                self.headers.append((number, match.group(1) == "[[", name))

    def _section(self, start):
        """The line numbers after a header up to the next one."""
        following = [number for number, _, _ in self.headers if number > start]
        return range(start + 1, (following[0] if following else len(self.lines) + 1))

    def _key_in(self, lines, key):
        pattern = re.compile(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=""")
        return next((number for number in lines if pattern.match(self.lines[number - 1])), None)

    def top(self, key):
        """The line of a top-level key, or 1."""
        first = self.headers[0][0] if self.headers else len(self.lines) + 1
        return self._key_in(range(1, first), key) or 1

    def channel(self, name, key=None):
        """The line of [channels.NAME] (or of key inside it)."""
        header = next((number for number, array, dotted in self.headers if not array and dotted == f"channels.{name}"),
                      None)
        if header is None:
            return self.top("channels")
        return (self._key_in(self._section(header), key) if key else None) or header

    def route(self, index, key=None):
        """The line of the index-th [[routes]] entry (or of key inside it)."""
        entries = [number for number, array, dotted in self.headers if array and dotted == "routes"]
        if index >= len(entries):
            return self.top("routes")
        header = entries[index]
        return (self._key_in(self._section(header), key) if key else None) or header


class _Problem(Exception):
    """A bad value: which field, on which line, and what is wrong."""

    def __init__(self, line, field_name, message):
        super().__init__(message)
        self.line, self.field_name, self.message = line, field_name, message


def parse_duration(value, what):
    """Seconds from a number or a string such as "10s", "5m", "4h", "1h30m"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _DURATION.match(value):
        return sum(float(number) * DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(value))
    raise ValueError(f"{what} must be seconds (a number) or a duration such as \"30s\", \"5m\", \"4h\", "
                     f"got {value!r:.60}")


def load_notifier_config(path, mesh, data_dir=".nerve", environ=None):
    """The NotifierConfig of a TOML file; ConfigError("FILE:LINE: field X: what is wrong") when it cannot be used."""
    environ = os.environ if environ is None else environ
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the notifier config: {error}") from error
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        where = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = where.group(1) if where else str(max(len(text.splitlines()), 1))  # "(at end of document)"
        raise ConfigError(f"{path}:{line}: TOML syntax: {re.sub(r' ?[(]at .*[)]$', '', message)}") from error
    source = SourceLines(text)
    try:
        return _build(document, source, path, mesh, data_dir, environ)
    except _Problem as problem:
        raise ConfigError(f"{path}:{problem.line}: field {problem.field_name}: {problem.message}") from None


def _build(document, source, path, mesh, data_dir, environ):
    for key in document:
        if key not in TOP_KEYS:
            raise _Problem(source.top(key), key, f"unknown field; the top level takes {', '.join(TOP_KEYS)}")
    dashboard_url = _get(document, "dashboard_url", str, DEFAULT_DASHBOARD_URL, source.top("dashboard_url"),
                         "dashboard_url")
    if not _is_http_url(dashboard_url):
        raise _Problem(source.top("dashboard_url"), "dashboard_url",
                       f"must be the dashboard's http:// or https:// address, got {dashboard_url!r:.100}")
    max_retry_delay = _duration(document, "max_retry_delay", DEFAULT_MAX_RETRY_DELAY, source.top("max_retry_delay"),
                                "max_retry_delay", minimum=1.0)
    tables = document.get("channels")
    if not isinstance(tables, dict) or not tables:
        raise _Problem(source.top("channels"), "channels",
                       "at least one channel is needed: a [channels.NAME] table with type = \"webhook\", \"email\" "
                       "or \"alertmanager\"")
    channels = {name: _channel(name, table, source, environ) for name, table in tables.items()}
    entries = document.get("routes", [])
    if not isinstance(entries, list):
        raise _Problem(source.top("routes"), "routes", "must be [[routes]] entries (an array of tables)")
    routes = tuple(_route(index, entry, source, channels) for index, entry in enumerate(entries))
    if not routes:
        routes = (Route(channels=tuple(channels)),)  # no routes: every alert to every channel
    return NotifierConfig(mesh=mesh, path=str(path), channels=channels, routes=routes, data_dir=str(data_dir),
                          dashboard_url=dashboard_url, max_retry_delay=max_retry_delay)


def _get(table, key, kind, default, line, name):
    value = table.get(key, default)
    if value is not None and not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        expected = {str: "a string", bool: "true or false", int: "a whole number", list: "a list"}.get(kind, kind.__name__)
        raise _Problem(line, name, f"must be {expected}, got {value!r:.60}")
    return value


def _duration(table, key, default, line, name, minimum=0.0):
    try:
        seconds = parse_duration(table.get(key, default), "the value")
    except ValueError as error:
        raise _Problem(line, name, str(error)) from None
    if not minimum <= seconds <= 30 * 86400:
        raise _Problem(line, name, f"must be between {minimum:g} s and 30 days, got {seconds:g} s")
    return seconds


def _is_http_url(value):
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def _channel(name, table, source, environ):
    where = lambda key=None: source.channel(name, key)  # noqa: E731 (a small locator, used many times below)
    prefix = f"channels.{name}"
    if not _NAME.match(name):
        raise _Problem(where(), prefix, "a channel name may hold only letters, digits, '_' and '-' (at most 64)")
    if not isinstance(table, dict):
        raise _Problem(where(), prefix, "must be a table: [channels.NAME] with a type")
    kind = table.get("type")
    if kind not in CHANNEL_TYPES:
        raise _Problem(where("type"), f"{prefix}.type",
                       f"must be one of {', '.join(CHANNEL_TYPES)}, got {kind!r:.40}" if "type" in table else
                       f"missing; say which kind of channel this is: {', '.join(CHANNEL_TYPES)}")
    for key in table:
        if key not in CHANNEL_KEYS[kind]:
            raise _Problem(where(key), f"{prefix}.{key}",
                           f"unknown field for a {kind} channel; it takes {', '.join(CHANNEL_KEYS[kind])}")
    common = {"name": name, "type": kind,
              "timeout": _duration(table, "timeout", DEFAULT_TIMEOUT, where("timeout"), f"{prefix}.timeout", minimum=0.1),
              "concurrency": _get(table, "concurrency", int, DEFAULT_CONCURRENCY, where("concurrency"),
                                  f"{prefix}.concurrency")}
    if not 1 <= common["concurrency"] <= 64:
        raise _Problem(where("concurrency"), f"{prefix}.concurrency", f"must be 1 to 64, got {common['concurrency']}")
    if kind in ("webhook", "alertmanager"):
        url = _get(table, "url", str, None, where("url"), f"{prefix}.url")
        if url is None:
            raise _Problem(where(), f"{prefix}.url", f"missing; a {kind} channel needs the http:// or https:// url to POST to")
        if not _is_http_url(url):
            raise _Problem(where("url"), f"{prefix}.url", f"must be an http:// or https:// URL, got {url!r:.100}")
        return (WebhookChannel if kind == "webhook" else AlertmanagerChannel)(url=url, **common)
    return _email(table, where, prefix, common, environ)


def _email(table, where, prefix, common, environ):
    smtp = _get(table, "smtp", str, None, where("smtp"), f"{prefix}.smtp")
    if smtp is None:
        raise _Problem(where(), f"{prefix}.smtp", "missing; an email channel needs the server as \"host:port\"")
    host, port = _host_port(smtp)
    if host is None:
        raise _Problem(where("smtp"), f"{prefix}.smtp", f"must be \"host:port\" with a port from 1 to 65535, got {smtp!r:.80}")
    sender = _get(table, "from", str, None, where("from"), f"{prefix}.from")
    if sender is None or not _is_address(sender):
        raise _Problem(where("from") if sender is not None else where(), f"{prefix}.from",
                       f"must be the sender's address (name@domain), got {sender!r:.80}" if sender is not None else
                       "missing; an email channel needs the sender's address (name@domain)")
    to = table.get("to")
    to = [to] if isinstance(to, str) else to
    if not isinstance(to, list) or not to or not all(isinstance(item, str) and _is_address(item) for item in to):
        raise _Problem(where("to") if "to" in table else where(), f"{prefix}.to",
                       f"must be a list of addresses (name@domain), got {table.get('to')!r:.80}" if "to" in table else
                       "missing; an email channel needs the recipients: to = [\"name@domain\", ...]")
    starttls = _get(table, "starttls", bool, False, where("starttls"), f"{prefix}.starttls")
    username = _get(table, "username", str, None, where("username"), f"{prefix}.username")
    password_env = _get(table, "password_env", str, None, where("password_env"), f"{prefix}.password_env")
    password = None
    if (username is None) != (password_env is None):
        missing = "password_env" if password_env is None else "username"
        raise _Problem(where(), f"{prefix}.{missing}", "a login needs both username and password_env (the name of "
                                                       "the environment variable holding the password)")
    if password_env is not None:
        if not _ENV_NAME.match(password_env):
            raise _Problem(where("password_env"), f"{prefix}.password_env",
                           f"must name an environment variable (e.g. NERVE_SMTP_PASSWORD), got {password_env!r:.60}")
        password = environ.get(password_env)
        if password is None:
            raise _Problem(where("password_env"), f"{prefix}.password_env",
                           f"the environment variable {password_env} is not set; export it before starting the notifier")
    ca_file = _get(table, "ca_file", str, None, where("ca_file"), f"{prefix}.ca_file")
    if ca_file is not None and not Path(ca_file).is_file():
        raise _Problem(where("ca_file"), f"{prefix}.ca_file", f"no such file: {ca_file}")
    return EmailChannel(host=host, port=port, sender=sender, to=tuple(to), starttls=starttls, username=username,
                        password=password, ca_file=ca_file, **common)


def _host_port(value):
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None, None
    return host, int(port)


def _is_address(value):
    local, at, domain = value.rpartition("@")
    return bool(at and local and domain and " " not in value and "@" not in local)


def _strings(entry, key, line, name, pattern, what):
    value = entry.get(key)
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _Problem(line, name, f"must be {what}, got {value!r:.80}")
    for item in items:
        if not isinstance(item, str) or not pattern(item):
            raise _Problem(line, name, f"{item!r:.60} is not valid here: must be {what}")
    return tuple(items)


def _route(index, entry, source, channels):
    where = lambda key=None: source.route(index, key)  # noqa: E731 (a small locator, used many times below)
    prefix = f"routes[{index}]"
    if not isinstance(entry, dict):
        raise _Problem(where(), prefix, "must be a table ([[routes]])")
    for key in entry:
        if key not in ROUTE_KEYS:
            raise _Problem(where(key), f"{prefix}.{key}", f"unknown field; a route takes {', '.join(ROUTE_KEYS)}")
    names = _strings(entry, "channels", where("channels"), f"{prefix}.channels", lambda item: True,
                     "a list of channel names")
    if names is None:
        raise _Problem(where(), f"{prefix}.channels", f"missing; a route needs the channels it sends to "
                                                      f"(defined: {', '.join(channels)})")
    for name in names:
        if name not in channels:
            raise _Problem(where("channels"), f"{prefix}.channels",
                           f"no channel {name!r:.64} is defined; defined: {', '.join(channels)}")
    hosts = _strings(entry, "hosts", where("hosts"), f"{prefix}.hosts", _HOST_GLOB.match,
                     "a host id glob such as \"web-*\" (or a list of them)") or ("*",)
    metrics = _strings(entry, "metrics", where("metrics"), f"{prefix}.metrics", _METRIC.match,
                       "a list of metric families such as [\"cpu\", \"mem\", \"host\"]") or ()
    levels = _strings(entry, "levels", where("levels"), f"{prefix}.levels", lambda item: item in ALERT_LEVELS,
                      f"a list of levels from {', '.join(ALERT_LEVELS)}") or ()
    group_wait = _duration(entry, "group_wait", DEFAULT_GROUP_WAIT, where("group_wait"), f"{prefix}.group_wait")
    repeat_interval = _duration(entry, "repeat_interval", DEFAULT_REPEAT_INTERVAL, where("repeat_interval"),
                                f"{prefix}.repeat_interval", minimum=1.0)
    send_resolved = _get(entry, "send_resolved", bool, True, where("send_resolved"), f"{prefix}.send_resolved")
    return Route(channels=tuple(dict.fromkeys(names)), hosts=hosts, metrics=metrics, levels=levels,
                 group_wait=group_wait, repeat_interval=repeat_interval, send_resolved=send_resolved)
