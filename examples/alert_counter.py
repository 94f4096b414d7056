"""An example reactive component: a module of decorated plain functions, run with `nerve run examples/alert_counter.py`.

It counts the alerts each host raises, answers `app.alerts.count`, and publishes a
summary on `app.alerts.summary` every five seconds.
"""

from collections import Counter

from components import InvalidArgument, every, on, procedure

alerts_by_host = Counter()


@on("nerve.alert.", match="prefix")
def count_alert(alert, details):
    """Count one alert for the host named by the topic."""
    alerts_by_host[details.topic.rsplit(".", 1)[-1]] += 1


@procedure("app.alerts.count")
def alert_count(host_id=None):
    """Alerts seen for one host, or for all hosts when host_id is omitted."""
    if host_id is None:
        return sum(alerts_by_host.values())
    if not isinstance(host_id, str):
        raise InvalidArgument(f"host_id must be a string, got {type(host_id).__name__}")
    return alerts_by_host[host_id]


@every(5.0, now=False)
def publish_summary(mesh):
    """Publish the counts so far."""
    mesh.publish("app.alerts.summary", dict(alerts_by_host))
