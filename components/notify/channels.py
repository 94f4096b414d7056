"""What a message looks like on each channel type, and sending it without blocking the reactor.

A message is the notifications of one host due together on one channel (a group). Each alert in it carries its
de-duplication key (`key`: alert id, status, repeat number), so a receiver that gets a message twice (a
notifier killed after the channel took it, before it was recorded) can tell.
- webhook: POST JSON {"alerts": [...], ...} to the channel's url (ALERT_FIELDS below).
- alertmanager: POST to url/api/v2/alerts, one Alertmanager alert per alert (labels alertname, host, metric, level).
- email: one mail through SMTP (twisted.mail), STARTTLS and login when configured; its Message-ID derives from the
  keys, so a mail client shows a resent mail once.
"""

import hashlib
import io
import json
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from urllib.parse import urlparse

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust
from twisted.mail.smtp import ESMTPSenderFactory
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from components.mesh.errors import NerveError

# The fields of each alert in a webhook body; units: epoch seconds for times.
ALERT_FIELDS = {
    "key": "de-duplication key: alert id, status and repeat number joined by '|'",
    "id": "the alert's id: <host_id>/<metric>/<opened ts in ms>",
    "host_id": "the host's id", "hostname": "the host's name",
    "metric": "metric family ('host' when the host is DOWN, 'boot' for a reboot)",
    "level": "the level: MEDIUM, HIGH, DOWN or REBOOT (in a resolution, the last one this channel was told)",
    "previous": "the level before the last change",
    "value": "the metric's value at the last change", "ts": "epoch s of the last change",
    "opened_at": "epoch s the episode opened", "resolved_at": "epoch s it resolved, or null",
    "resolved_as": "in a resolution: the level it resolved as (LOW, UP, OFFLINE); `level` is the one that fired",
    "status": "firing or resolved", "state": "firing, acknowledged, silenced or resolved",
    "repeat": "0 for the first notification of the episode, then 1, 2, ... (repeats and level changes)",
    "acked_by": "who acknowledged it, or null", "url": "the host on the dashboard (absolute)",
}
# An alert pushed to Alertmanager stays active until endsAt; a firing one is pushed again at each repeat, so it ends
# only if neither a repeat nor the resolution comes within this margin after the repeat was due.
ALERTMANAGER_END_MARGIN = 3600.0
JSON_HEADERS = Headers({b"Content-Type": [b"application/json"]})


class DeliveryError(NerveError):
    """A channel did not take a message (refused, unreachable, timed out); the message stays in the outbox."""


def alert_of(notification, config):
    """One alert of a message: the record's fields that matter to people, its key, an absolute link."""
    record = notification.record
    alert = {name: record.get(name) for name in ALERT_FIELDS if name in record}
    alert.update(key=notification.key, id=notification.alert_id, host_id=notification.host_id,
                 status=notification.status, repeat=notification.repeat, url=config.link(record.get("url")),
                 hostname=record.get("hostname", notification.host_id))
    for name in ("metric", "level", "previous", "value", "ts"):
        alert.setdefault(name, None)
    return alert


def webhook_body(channel, group, config):
    """The JSON body of a webhook message."""
    return {"channel": channel.name, "host_id": group[0].host_id, "sent_at": round(time.time(), 3),
            "alerts": [alert_of(notification, config) for notification in group]}


def _iso(epoch):
    return datetime.fromtimestamp(float(epoch), timezone.utc).isoformat().replace("+00:00", "Z")


def alertmanager_body(group, config, repeat_interval_of):
    """The list of Alertmanager v2 alerts of a message; a level change also ends the previous level's alert."""
    now = time.time()
    alerts = []
    for notification in group:
        record = notification.record
        labels = {"alertname": f"nerve_{record.get('metric', 'alert')}".replace(".", "_"), "host": notification.host_id,
                  "metric": str(record.get("metric")), "level": str(record.get("level"))}
        annotations = {"summary": _summary(record, notification.status), "hostname": str(record.get("hostname", "")),
                       "value": str(record.get("value")), "previous": str(record.get("previous")),
                       "alert_id": notification.alert_id, "key": notification.key}
        started = record.get("opened_at", record.get("ts", now))
        entry = {"labels": labels, "annotations": annotations, "startsAt": _iso(started),
                 "generatorURL": config.link(record.get("url"))}
        if notification.status == "resolved":
            entry["endsAt"] = _iso(record.get("resolved_at") or now)
        else:
            entry["endsAt"] = _iso(now + repeat_interval_of(notification) + ALERTMANAGER_END_MARGIN)
            previous = record.get("previous")
            if previous and previous not in ("LOW", record.get("level")):
                alerts.append({"labels": dict(labels, level=str(previous)), "annotations": annotations,
                               "startsAt": _iso(started), "endsAt": _iso(now), "generatorURL": entry["generatorURL"]})
        alerts.append(entry)
    return alerts


def _summary(record, status):
    what = f"{record.get('metric')} {record.get('level')}"
    if record.get("value") is not None:
        what += f" ({record.get('value')})"
    return f"{record.get('hostname') or record.get('host_id')}: {what}" + (" resolved" if status == "resolved" else "")


def email_message(channel, group, config):
    """The mail of a message: subject with the host and the worst status, one paragraph per alert, a link each."""
    host = group[0].host_id
    firing = [notification for notification in group if notification.status == "firing"]
    head = f"FIRING {len(firing)}" if firing else "RESOLVED"
    levels = ", ".join(dict.fromkeys(f"{n.record.get('metric')} {n.record.get('level')}" for n in (firing or group)))
    message = EmailMessage()
    message["Subject"] = f"[nerve] {head} {host}: {levels}"
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.to)
    message["Date"] = formatdate(localtime=False)
    keys = [notification.key for notification in group]
    message["Message-ID"] = f"<{hashlib.sha256(' '.join(keys).encode()).hexdigest()[:32]}@nerve.notifier>"
    message["X-Nerve-Keys"] = " ".join(keys)
    lines = []
    for notification in group:
        alert = alert_of(notification, config)
        lines.append(f"{alert['status'].upper()}: {_summary(notification.record, notification.status)}")
        lines.append(f"  level {alert['level']} (was {alert['previous']}), since "
                     f"{_iso(alert.get('opened_at') or alert['ts'] or time.time())}, state {alert.get('state')}")
        lines.append(f"  {alert['url']}")
        lines.append(f"  key {alert['key']}")
        lines.append("")
    message.set_content("\n".join(lines))
    return message.as_bytes()


class _Endpoints:
    """Agent's endpoint factory, each (scheme, host, port) built once: Twisted's own encodes the host name (IDNA)
    again for every request, a noticeable part of a webhook's CPU in a burst."""

    def __init__(self, reactor, timeout):
        self.reactor = reactor
        self.timeout = timeout
        self.built = {}

    def endpointForURI(self, uri):
        """The endpoint of an http(s) URI (twisted.web.iweb.IAgentEndpointFactory)."""
        key = (uri.scheme, uri.host, uri.port)
        if key not in self.built:
            endpoint = HostnameEndpoint(self.reactor, uri.host, uri.port, timeout=self.timeout)
            if uri.scheme == b"https":
                endpoint = wrapClientTLS(optionsForClientTLS(uri.host.decode("idna")), endpoint)
            self.built[key] = endpoint
        return self.built[key]


class Senders:
    """Sends one message on a channel: a Deferred that fires when the channel took it, or fails with DeliveryError."""

    def __init__(self, config, reactor=None):
        from twisted.internet import reactor as default_reactor

        self.config = config
        self.reactor = reactor or default_reactor
        self._pool = self._agent = None

    def send(self, channel, group, repeat_interval_of):
        """Deliver group (notifications of one host) on channel."""
        if channel.type == "webhook":
            return self._post(channel, channel.url, webhook_body(channel, group, self.config))
        if channel.type == "alertmanager":
            return self._post(channel, channel.alerts_url, alertmanager_body(group, self.config, repeat_interval_of))
        return self._mail(channel, email_message(channel, group, self.config))

    @defer.inlineCallbacks
    def _post(self, channel, url, body):
        if self._agent is None:
            pool = HTTPConnectionPool(self.reactor, persistent=True)
            pool.maxPersistentPerHost = max(c.concurrency for c in self.config.channels.values())
            endpoints = _Endpoints(self.reactor, max(c.timeout for c in self.config.channels.values()))
            self._pool, self._agent = pool, Agent.usingEndpointFactory(self.reactor, endpoints, pool=pool)
        request = self._agent.request(b"POST", url.encode(), JSON_HEADERS,
                                      FileBodyProducer(io.BytesIO(json.dumps(body).encode())))
        request.addTimeout(channel.timeout, self.reactor)
        try:
            response = yield request
            text = (yield readBody(response)).decode(errors="replace")
        except defer.TimeoutError:
            raise DeliveryError(f"no answer from {_origin(url)} within {channel.timeout:g} s") from None
        except Exception as error:  # connection refused, reset, DNS: the channel is unreachable
            raise DeliveryError(f"{_origin(url)}: {_reason(error)}") from None
        if not 200 <= response.code < 300:
            raise DeliveryError(f"{_origin(url)} answered HTTP {response.code}: {text.strip()[:200]}")
        return response.code

    def _mail(self, channel, message):
        context = None
        if channel.starttls:
            trust = Certificate.loadPEM(Path(channel.ca_file).read_bytes()) if channel.ca_file else platformTrust()
            context = optionsForClientTLS(channel.host, trustRoot=trust)

        def cancel(deferred):
            factory.sendFinished = True
            if factory.currentProtocol and factory.currentProtocol.transport:
                factory.currentProtocol.transport.abortConnection()
            else:
                connector.disconnect()

        sent = defer.Deferred(cancel)
        factory = ESMTPSenderFactory(
            channel.username.encode() if channel.username else None,
            channel.password.encode() if channel.password is not None else None,
            channel.sender, list(channel.to), io.BytesIO(message), sent, retries=0, timeout=channel.timeout,
            contextFactory=context, heloFallback=not (channel.starttls or channel.username),
            requireAuthentication=bool(channel.username), requireTransportSecurity=channel.starttls)
        connector = self.reactor.connectTCP(channel.host, channel.port, factory, timeout=channel.timeout)
        sent.addTimeout(channel.timeout * 2, self.reactor)

        def failed(failure):
            if failure.check(defer.TimeoutError, defer.CancelledError):
                raise DeliveryError(f"smtp {channel.host}:{channel.port}: no answer within {channel.timeout * 2:g} s")
            raise DeliveryError(f"smtp {channel.host}:{channel.port}: {_reason(failure.value)}")

        return sent.addErrback(failed)


def _origin(url):
    """scheme://host:port of a URL: errors are shown to anonymous dashboards, and a webhook's path or query often
    holds its secret token."""
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc.rpartition('@')[2]}"


def _reason(error):
    text = str(error).strip() or type(error).__name__
    # Twisted's connection errors repeat themselves ("Connection was refused by other side: 111: Connection refused.")
    return text.splitlines()[0][:300]
