"""Who listens: the router's live subscriptions, so a publisher can skip events nobody would receive.

A publish to a topic without subscribers still costs the router a message to receive, parse and
authorize. The orchestrator publishes one analysis event per host per second; with the
dashboards on the overview (fed by the digest), none of them has a receiver. This follows the
router's subscriptions through the meta API (`wamp.subscription.list`/`get` once per join, then
`wamp.subscription.on_create`/`on_delete`) and answers `wants(topic)` from memory.
"""

from collections import Counter

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer


def wildcard_matches(pattern, topic):
    """WAMP wildcard matching: same number of components, an empty pattern component matches any one."""
    wanted, given = pattern.split("."), topic.split(".")
    return len(wanted) == len(given) and all(not w or w == g for w, g in zip(wanted, given))


class TopicInterest:
    """The router's current subscriptions under a topic prefix; until loaded, every topic counts as wanted."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.loaded = False
        self.exact = Counter()  # uri -> subscriptions (one per uri on the router; a Counter survives odd orders)
        self.patterns = {}  # subscription id -> (uri, match) for prefix and wildcard subscriptions
        self.exact_ids = {}  # subscription id -> uri

    def add(self, details):
        """Record a subscription from its meta API details ({id, uri, match, ...})."""
        sub_id, uri, match = details.get("id"), details.get("uri"), details.get("match", "exact")
        if not isinstance(uri, str) or sub_id in self.exact_ids or sub_id in self.patterns:
            return
        if match == "exact":
            if uri.startswith(self.prefix):
                self.exact_ids[sub_id] = uri
                self.exact[uri] += 1
        elif self.prefix.startswith(uri) or uri.startswith(self.prefix) or match == "wildcard":
            self.patterns[sub_id] = (uri, match)

    def remove(self, sub_id):
        """Forget a subscription the router deleted (its last subscriber left)."""
        uri = self.exact_ids.pop(sub_id, None)
        if uri is not None:
            self.exact[uri] -= 1
            if self.exact[uri] <= 0:
                del self.exact[uri]
        self.patterns.pop(sub_id, None)

    def wants(self, topic):
        """Whether any subscription on the router would receive an event on topic."""
        if not self.loaded or topic in self.exact:
            return True
        for uri, match in self.patterns.values():
            if topic.startswith(uri) if match == "prefix" else wildcard_matches(uri, topic):
                return True
        return False

    @defer.inlineCallbacks
    def load(self, session):
        """Read every current subscription from the router; call after subscribing to on_create/on_delete."""
        self.loaded = False
        self.exact.clear()
        self.patterns.clear()
        self.exact_ids.clear()
        listed = yield session.call("wamp.subscription.list")
        for sub_id in [sub_id for ids in listed.values() for sub_id in ids]:
            try:
                details = yield session.call("wamp.subscription.get", sub_id)
            except ApplicationError:
                continue  # deleted between list and get
            if details:
                self.add(details)
        self.loaded = True
