"""Terminal tools on the mesh: listen to a topic, watch analysis and alerts, send one event."""

from dataclasses import dataclass

from components.mesh.config import MeshConfig
from components.mesh.decorators import on
from components.mesh.errors import ConfigError

URI_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-.")


def check_topic(topic, allow_prefix):
    """Raise ConfigError unless topic is a dotted lower-case URI (a trailing '.' marks a prefix)."""
    body = topic[:-1] if allow_prefix and topic.endswith(".") else topic
    if not body or not set(body) <= URI_CHARS or ".." in body or body.startswith(".") or body.endswith("."):
        raise ConfigError(f"topic {topic!r} must be dotted lower-case words like nerve.alert.web-01"
                          + (" (end with '.' for a prefix)" if allow_prefix else ""))


@dataclass(frozen=True)
class ListenConfig:
    """What `nerve listen` subscribes to."""

    mesh: MeshConfig
    topic: str

    def __post_init__(self):
        check_topic(self.topic, allow_prefix=True)

    @property
    def subscription(self):
        """(topic, match) for the WAMP subscription: a trailing '.' means prefix."""
        return (self.topic, "prefix") if self.topic.endswith(".") else (self.topic, "exact")


class Listener:
    """Hands every event on the configured topic to a printer."""

    def __init__(self, config, printer):
        self.printer = printer

    @on(lambda config: config.subscription[0], match=lambda config: config.subscription[1])
    def on_event(self, *args, details=None, **kwargs):
        """Print one event: its single payload, or all its arguments."""
        payload = args[0] if len(args) == 1 and not kwargs else {"args": list(args), "kwargs": kwargs}
        self.printer(details.topic, payload)


@dataclass(frozen=True)
class WatchConfig:
    """`nerve watch` needs only the connection."""

    mesh: MeshConfig


class Watcher:
    """Prints one line per analysed host and per alert."""

    def __init__(self, echo):
        self.echo = echo

    @on("nerve.analysis.", match="prefix")
    def on_analysis(self, analysis):
        """One line: host, level, headline values."""
        metrics = analysis.get("metrics", {})
        values = " ".join(f"{name}={metrics[name]['value']:.1f}" for name in ("cpu", "mem") if name in metrics)
        self.echo(f"{analysis['host_id']:<24} {analysis.get('level') or '-':<6} seq={analysis['seq']} {values}")

    @on("nerve.alert.", match="prefix")
    def on_alert(self, alert):
        """One line per level change."""
        if isinstance(alert, dict) and "level" in alert:
            self.echo(f"ALERT {alert.get('host_id')} {alert.get('metric')}: {alert.get('previous')} -> {alert['level']}"
                      f" ({alert.get('value')})")
        else:
            self.echo(f"ALERT {alert}")


@dataclass(frozen=True)
class SendConfig:
    """One event to publish."""

    mesh: MeshConfig
    topic: str
    message: str

    def __post_init__(self):
        check_topic(self.topic, allow_prefix=False)


def send_once(config):
    """Publish the message (acknowledged) and return the exit code."""
    import time

    from components.mesh.runner import run_once

    event = {"message": config.message, "ts": round(time.time(), 3), "sender": config.mesh.authid}
    return run_once(lambda mesh: mesh.publish(config.topic, event, acknowledge=True), config, name="nerve alert send")
