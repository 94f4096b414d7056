"""Hot standby among instances of one component: the one the router routes a shared 'first' procedure to is active.

Every instance registers the same URI with invoke='first', answering its own session id; each asks it now and then.
The router routes the call to the instance that registered first, so exactly one hears its own id back.
"""

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer


@defer.inlineCallbacks
def routed_to_me(mesh, uri, timeout=2):
    """Whether the router routes `uri` to this session (a Deferred of True or False), or None if it could not be asked."""
    try:
        leader = yield mesh.call(uri, timeout=timeout)
    except (ApplicationError, defer.CancelledError):
        return None
    return mesh.connected and leader == mesh.session.session_id
