"""The small framework: decorators annotate only, handlers are wrapped so bad input is counted, errors map to URIs."""

from operator import itemgetter

import pytest
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer

from components.config import MeshConfig, uri_safe
from components.decorators import Every, OnEvent, Procedure, bindings_of, every, on, procedure, resolve
from components.errors import ConfigError, InvalidArgument, NotFound
from components.runner import Mesh, NerveSession, call_handler, event_handler


def plain(x):
    return x * 2


def test_decorators_return_the_function_unchanged_and_only_annotate():
    decorated = on("nerve.alert.", match="prefix")(procedure("app.double")(every(5)(plain)))
    assert decorated is plain and decorated(21) == 42
    assert set(type(b) for b in plain.__nerve_bindings__) == {OnEvent, Procedure, Every}


@pytest.mark.parametrize("make", [lambda: on("t", match="regex"), lambda: procedure("p", invoke="sometimes")])
def test_decorators_reject_unknown_policies(make):
    with pytest.raises(ValueError):
        make()


def test_bindings_found_on_modules_and_objects_and_settings_resolved_from_config():
    class Component:
        @procedure("app.x", invoke="roundrobin", concurrency=lambda config: config.cap)
        def serve(self):
            return 1

    component = Component()
    [(func, binding)] = bindings_of(component)
    assert func() == 1 and binding.uri == "app.x"
    assert resolve(binding.concurrency, type("Config", (), {"cap": 3})) == 3
    assert resolve(7, None) == 7


class Details:
    def __init__(self, topic):
        self.topic = topic


def test_event_handler_counts_and_drops_bad_events_without_raising():
    mesh = Mesh(config=None)
    seen = []

    def handle(event):
        if "bad" in event:
            raise InvalidArgument("bad field")
        seen.append(event)

    wrapped = event_handler(handle, mesh)
    wrapped({"bad": 1}, details=Details("nerve.measure.h1"))
    wrapped({"ok": 1}, details=Details("nerve.measure.h1"))
    assert seen == [{"ok": 1}]
    assert mesh.dropped == {"nerve.measure.h1": 1}


def test_event_handler_survives_a_handler_bug_and_counts_it():
    mesh = Mesh(config=None)
    wrapped = event_handler(lambda event: 1 / 0, mesh)
    assert wrapped({}, details=Details("t")) is None
    assert mesh.errors == {"<lambda>": 1}


def test_a_call_autobahn_cannot_send_comes_back_as_a_failure_not_an_exception():
    from autobahn.exception import PayloadExceededError

    class RefusingSession:
        def is_attached(self):
            return True

        def call(self, uri, *args, **kwargs):
            raise PayloadExceededError("tried to send RawSocket message with size 9000000 exceeding payload limit")

    mesh = Mesh(config=None)
    mesh.session = RefusingSession()
    failures = []
    mesh.call("nerve.analyze", []).addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(PayloadExceededError)


def test_event_handler_drops_events_of_the_wrong_shape_as_bad_input():
    mesh = Mesh(config=None)
    wrapped = event_handler(lambda event: None, mesh)
    wrapped({}, {}, details=Details("t"))
    wrapped({}, extra=1, details=Details("t"))
    assert mesh.dropped == {"t": 2} and not mesh.errors


def test_session_hands_plain_events_to_nerve_handlers_directly_and_others_to_autobahn(monkeypatch):
    import txaio
    from autobahn.wamp import message
    from autobahn.wamp.request import Handler, Subscription

    wrapped_by_autobahn = []
    as_future = txaio.as_future
    monkeypatch.setattr(txaio, "as_future", lambda fn, *args, **kwargs: (wrapped_by_autobahn.append(fn), as_future(fn, *args, **kwargs))[1])
    seen = []
    session = NerveSession()
    session._session_id = 1
    nerve = event_handler(lambda event, details: seen.append(("nerve", event, details.topic)), Mesh(config=None))
    foreign = lambda event, details: seen.append(("foreign", event, details.topic))  # noqa: E731
    session._subscriptions = {1: [Subscription(1, "a.", session, Handler(nerve, None, "details"))],
                              2: [Subscription(2, "b.", session, Handler(foreign, None, "details"))]}
    deferreds = []
    session._swallow_error = lambda error, text: deferreds.append(error)
    session.onMessage(message.Event(1, 10, args=[{"x": 1}], topic="a.one"))
    session.onMessage(message.Event(2, 11, args=[{"x": 2}], topic="b.two"))
    assert seen == [("nerve", {"x": 1}, "a.one"), ("foreign", {"x": 2}, "b.two")] and not deferreds
    assert wrapped_by_autobahn == [foreign]  # the nerve handler skipped Autobahn's Deferred wrapping


def framed_session(max_len_send=0):
    """A NerveSession and a plain Autobahn Session, each on a RawSocket MessagePack transport that keeps what it sends."""
    from autobahn.twisted.rawsocket import WampRawSocketClientProtocol
    from autobahn.twisted.wamp import Session
    from autobahn.wamp.serializer import MsgPackSerializer

    sessions = []
    for session in (NerveSession(), Session()):
        transport = WampRawSocketClientProtocol()
        transport._serializer, transport._session, transport._max_len_send = MsgPackSerializer(), session, max_len_send
        transport.sent = []
        transport.sendString = transport.sent.append
        session._transport, session._session_id = transport, 1
        sessions.append(session)
    return sessions


MEASUREMENT = {"host_id": "web-1", "seq": 3, "ts": 1700000000.25, "metrics": {"cpu": 12.5, "procs": 301}, "tag": b"\x00"}


@pytest.mark.parametrize("args, acknowledge, retain", [
    ((MEASUREMENT,), True, False), ((MEASUREMENT,), False, False), ((), False, False), ((1, "two", [3.0]), True, False),
    ((MEASUREMENT,), True, True),  # retained: Autobahn's own path
])
def test_session_frames_a_plain_publish_as_autobahn_would(args, acknowledge, retain, monkeypatch):
    from autobahn.wamp import message

    from components.runner import PUBLISH_OPTIONS

    marshalled = []
    marshal = message.Publish.marshal
    monkeypatch.setattr(message.Publish, "marshal", lambda publish: (marshalled.append(publish), marshal(publish))[1])
    nerve, autobahn = framed_session()
    replies = [session.publish("nerve.measure.web-1", *args, options=PUBLISH_OPTIONS[acknowledge, retain])
               for session in (nerve, autobahn)]
    assert len(marshalled) == (2 if retain else 1)  # no message object for a plain publish of nerve's
    assert nerve._transport.sent == autobahn._transport.sent and len(nerve._transport.sent) == 1
    assert (replies[0] is None) == (replies[1] is None) == (not acknowledge)
    assert set(nerve._publish_reqs) == set(autobahn._publish_reqs)
    counted = [itemgetter("bytes", "messages", "rated_messages")(session._transport._serializer.stats(reset=False))
               for session in (nerve, autobahn)]
    assert counted[0] == counted[1] and counted[0][1] == 1


def test_a_framed_publish_is_acknowledged_refused_and_checked_as_autobahn_does():
    from autobahn.exception import PayloadExceededError
    from autobahn.wamp import message
    from autobahn.wamp.exception import InvalidUriError, SerializationError

    from components.runner import PUBLISH_OPTIONS

    session, _ = framed_session()
    acknowledged = session.publish("nerve.measure.web-1", MEASUREMENT, options=PUBLISH_OPTIONS[True, False])
    refused = session.publish("nerve.measure.web-2", MEASUREMENT, options=PUBLISH_OPTIONS[True, False])
    first, second = session._publish_reqs
    session.onMessage(message.Published(first, 77))
    session.onMessage(message.Error(message.Publish.MESSAGE_TYPE, second, "wamp.error.not_authorized"))
    got = []
    acknowledged.addCallback(lambda publication: got.append(publication.id))
    assert got == [77] and failure_of(refused).error == "wamp.error.not_authorized" and not session._publish_reqs
    with pytest.raises(InvalidUriError):
        session.publish("nerve measure", MEASUREMENT)
    with pytest.raises(SerializationError):
        session.publish("nerve.measure.web-1", {"x": object()}, options=PUBLISH_OPTIONS[True, False])
    small, _ = framed_session(max_len_send=100)
    with pytest.raises(PayloadExceededError):
        small.publish("nerve.measure.web-1", MEASUREMENT, options=PUBLISH_OPTIONS[True, False])
    assert not session._publish_reqs and not small._publish_reqs and len(session._transport.sent) == 2


def receiving_session():
    """A joined NerveSession opened on a RawSocket MessagePack transport, what its nerve handler sees, and the messages
    Autobahn parsed for it."""
    from autobahn.wamp.request import Handler, Subscription

    session, _ = framed_session()
    transport = session._transport
    transport.aborted = []
    transport.abort = lambda: transport.aborted.append(True)
    session._session_id = None
    session.onOpen(transport)  # installs the receiver and says HELLO
    session._session_id = 1
    seen = []
    nerve = event_handler(lambda event, details: seen.append((event, details.publication, details.topic, details.publisher,
                                                              details.publisher_authid, details.retained)), Mesh(config=None))
    session._subscriptions = {5: [Subscription(5, "nerve.measure.", session, Handler(nerve, None, "details"))]}
    parsed = []
    session.onMessage = lambda msg: (parsed.append(type(msg).__name__), NerveSession.onMessage(session, msg))[1]
    return session, seen, parsed


EVENT_DETAILS = {"topic": "nerve.measure.web-1", "publisher": 42, "publisher_authid": "web-1", "retained": False}


@pytest.mark.parametrize("raw, decoded_here, delivered", [
    ([36, 5, 900, EVENT_DETAILS, [MEASUREMENT]], True, [(MEASUREMENT, 900, "nerve.measure.web-1", 42, "web-1", False)]),
    ([36, 5, 900, {}, [MEASUREMENT]], True, [(MEASUREMENT, 900, "nerve.measure.", None, None, None)]),
    ([36, 5, 900, {"topic": "nerve.measure.web-1"}], True, []),  # no arguments: the handler's drop counter
    ([36, 5, 900, EVENT_DETAILS, [MEASUREMENT], {"k": 1}], False, []),  # keyword arguments: Autobahn's path
    ([36, 5, 900, dict(EVENT_DETAILS, forward_for=[{"session": 7, "authid": "a", "authrole": "r"}]), [MEASUREMENT]], False,
     [(MEASUREMENT, 900, "nerve.measure.web-1", 42, "web-1", False)]),  # another detail: Autobahn's path
    ([36, 5, 900, {"topic": "nerve.measure.web-1", "transaction_hash": "t"}, [MEASUREMENT]], False,
     [(MEASUREMENT, 900, "nerve.measure.web-1", None, None, None)]),
])
def test_session_decodes_plain_events_itself_and_delivers_them_as_autobahn_does(raw, decoded_here, delivered):
    import msgpack

    payload = msgpack.packb(raw, use_bin_type=True)
    session, seen, parsed = receiving_session()
    session._transport.stringReceived(payload)
    reference, reference_seen, _ = receiving_session()
    type(reference._transport).stringReceived(reference._transport, payload)  # Autobahn's parse, then onMessage
    assert seen == reference_seen == delivered
    assert parsed == ([] if decoded_here else ["Event"])
    serializer = session._transport._serializer
    assert (serializer._unserialized_messages, serializer._unserialized_bytes) == (1, len(payload))


@pytest.mark.parametrize("raw", [
    [36, 5, 900, {"topic": "nerve.measure.web-1", "publisher": "42"}, [MEASUREMENT]],  # a detail of the wrong type
    [36, 5, -1, {"topic": "nerve.measure.web-1"}, [MEASUREMENT]],  # not a WAMP id
    [36, 5, 900, {"topic": "nerve.measure.web-1"}, {"not": "a list"}],
    [17, 12345, 77],  # PUBLISHED for a request never made
])
def test_a_malformed_event_or_acknowledgement_goes_to_autobahn_which_closes_the_connection(raw):
    import msgpack

    session, seen, parsed = receiving_session()
    session._transport.stringReceived(msgpack.packb(raw, use_bin_type=True))
    assert session._transport.aborted == [True] and seen == []
    session._transport.stringReceived(b"\x95\x24\xc1")  # the head of an EVENT, then bytes MessagePack never uses
    assert session._transport.aborted == [True, True]


def test_session_resolves_acknowledgements_itself_and_drops_those_of_cancelled_publishes():
    import msgpack

    from components.runner import PUBLISH_OPTIONS

    session, _, parsed = receiving_session()
    acknowledged = session.publish("nerve.measure.web-1", MEASUREMENT, options=PUBLISH_OPTIONS[True, False])
    cancelled = session.publish("nerve.measure.web-1", MEASUREMENT, options=PUBLISH_OPTIONS[True, False])
    cancelled.addErrback(lambda failure: None)
    cancelled.cancel()
    got = []
    acknowledged.addCallback(lambda publication: got.append((publication.id, publication.was_encrypted)))
    for request_id in list(session._publish_reqs):
        session._transport.stringReceived(msgpack.packb([17, request_id, 77]))
    assert got == [(77, False)] and not session._publish_reqs and parsed == [] and not session._transport.aborted


def test_handler_gets_details_and_mesh_only_when_it_asks():
    mesh = Mesh(config=None)
    got = {}

    def handle(event, details, mesh):
        got.update(event=event, topic=details.topic, mesh=mesh)

    event_handler(handle, mesh)({"a": 1}, details=Details("x.y"))
    assert got == {"event": {"a": 1}, "topic": "x.y", "mesh": mesh}


def failure_of(deferred):
    failures = []
    deferred.addErrback(failures.append)
    assert failures, "expected the call to fail"
    return failures[0].value


@pytest.mark.parametrize("raised, uri", [
    (InvalidArgument("host_id must be a string"), "nerve.error.invalid_argument"),
    (NotFound("no host 'x'"), "nerve.error.not_found"),
    (ZeroDivisionError("boom"), "nerve.error.internal"),
])
def test_call_handler_maps_errors_to_nerve_uris_with_the_message(raised, uri):
    def serve():
        raise raised

    error = failure_of(call_handler(serve, Mesh(config=None), "app.serve")())
    assert isinstance(error, ApplicationError) and error.error == uri
    assert str(raised) in error.error_message()


def test_call_handler_rejects_wrong_arguments_naming_them():
    def serve(host_id, seconds=60):
        return host_id

    with pytest.raises(ApplicationError) as raised:
        call_handler(serve, Mesh(config=None), "app.serve")(unknown=1)
    assert raised.value.error == "nerve.error.invalid_argument" and "host_id" in raised.value.error_message()


def test_call_handler_passes_results_and_deferreds_through():
    results = []
    call_handler(lambda a, b: defer.succeed(a + b), Mesh(config=None), "app.add")(2, 3).addCallback(results.append)
    assert results == [5]


@pytest.mark.parametrize("field, value, fragment", [
    ("router", "http://x", "router URL"),
    ("realm", "Bad Realm", "realm"),
    ("log_level", "loud", "log level"),
    ("role", "superuser", "role"),
])
def test_mesh_config_validates_at_construction(field, value, fragment):
    values = dict(role="tracker")
    values[field] = value
    with pytest.raises(ConfigError, match=fragment):
        MeshConfig(**values)


def test_mesh_config_transports_and_default_authid():
    rawsocket = MeshConfig(role="analyzer", router="rs://10.0.0.1:8080")
    assert rawsocket.transport()["type"] == "rawsocket" and rawsocket.transport()["max_retries"] == -1
    assert rawsocket.transport()["max_retry_delay"] <= 2
    assert MeshConfig(role="analyzer", router="ws://h:1/ws").transport()["type"] == "websocket"
    assert rawsocket.authid.startswith("analyzer-")


@pytest.mark.parametrize("name, expected", [("Web-01.example.COM", "web-01-example-com"), ("---", "unnamed"), ("db_2", "db_2")])
def test_uri_safe(name, expected):
    assert uri_safe(name) == expected


@pytest.mark.parametrize("at_once", [True, False])
def test_a_joined_component_writes_large_messages_at_once_unless_told_not_to(at_once):
    from types import SimpleNamespace

    from twisted.internet.abstract import FileDescriptor

    from components import framing
    from components.runner import Binder

    connection = FileDescriptor(reactor=object())
    session = SimpleNamespace(_transport=SimpleNamespace(transport=connection))
    mesh_config = MeshConfig(role="analyzer", tcp_nodelay=False, large_messages_at_once=at_once)
    binder = Binder([], Mesh(SimpleNamespace(mesh=mesh_config)))
    binder.on_join(session, SimpleNamespace(realm="nerve", authid="analyzer-1", authrole="analyzer"))
    assert binder.joined.called
    assert connection.SEND_LIMIT == (framing.AT_ONCE_LIMIT if at_once else 128 * 1024)
