"""`Mesh`: the live session as handlers see it (publish, call, the config, counts of dropped input)."""

from collections import Counter

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, PublishOptions
from twisted.internet import defer
from twisted.logger import Logger

from components.mesh.errors import Unavailable

log = Logger(namespace="nerve")

# Built once: a tracker simulating thousands of hosts publishes thousands of times a second.
PUBLISH_OPTIONS = {(acknowledge, retain): PublishOptions(acknowledge=acknowledge, retain=retain) if (acknowledge or retain) else None
                   for acknowledge in (False, True) for retain in (False, True)}


def _not_connected():
    return defer.fail(ApplicationError(Unavailable.uri, "not connected to the router"))


class Mesh:
    """The live session as handlers see it: publish, call, the config, and counts of dropped input."""

    def __init__(self, config):
        self.config = config
        self.session = None
        self.dropped = Counter()
        self.errors = Counter()

    @property
    def connected(self):
        """Whether a session is joined right now."""
        return self.session is not None and self.session.is_attached()

    def publish(self, topic, *args, acknowledge=False, retain=False, **kwargs):
        """Publish an event; with acknowledge=True the result is a Deferred that fails if refused."""
        if not self.connected:
            return _not_connected() if acknowledge else None
        return self.session.publish(topic, *args, options=PUBLISH_OPTIONS[acknowledge, retain], **kwargs)

    def call(self, uri, *args, timeout=None, on_progress=None, **kwargs):
        """Call a procedure; a timeout is enforced on this side by cancelling (router-side timeouts leak slots)."""
        if not self.connected:
            return _not_connected()
        options = CallOptions(on_progress=on_progress) if on_progress else None
        # Autobahn raises a call it cannot send (too big, unserializable) at once; callers get it as a failure.
        result = defer.maybeDeferred(self.session.call, uri, *args, options=options, **kwargs)
        if timeout:
            from twisted.internet import reactor

            cancel_after(result, timeout, reactor)
        return result

    def count_dropped(self, source, error):
        """Count one dropped event from source; log the first of each kind so floods stay quiet."""
        self.dropped[source] += 1
        if self.dropped[source] in (1, 100, 10000):
            log.warn("dropped event #{n} from {source}: {error}", n=self.dropped[source], source=source, error=error)


def cancel_after(result, seconds, clock):
    """Cancel the Deferred `result` if it has not fired within `seconds` on `clock` (a reactor or task.Clock)."""
    timer = clock.callLater(seconds, result.cancel)
    result.addBoth(lambda value: (timer.active() and timer.cancel(), value)[1])
