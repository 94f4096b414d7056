"""The small framework: decorators annotate only, handlers are wrapped so bad input is counted, errors map to URIs."""

from operator import itemgetter

import pytest
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer

from components.mesh.config import MeshConfig, uri_safe
from components.mesh.decorators import Every, OnEvent, Procedure, bindings_of, every, on, procedure, resolve
from components.mesh.errors import ConfigError, InvalidArgument, NotFound
from components.mesh.handlers import call_handler, event_handler
from components.mesh.session import Mesh


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

    from components.mesh import rawsocket as framing
    from components.mesh.binder import Binder
    from components.mesh.tuning import tune_transport

    connection = FileDescriptor(reactor=object())
    session = SimpleNamespace(transport=SimpleNamespace(transport=connection))
    mesh_config = MeshConfig(role="analyzer", tuning={"tcp_nodelay": False, "large_messages_at_once": at_once})
    binder = Binder([], Mesh(SimpleNamespace(mesh=mesh_config)),
                    on_transport=lambda transport: tune_transport(transport, mesh_config.tuning))
    binder.on_join(session, SimpleNamespace(realm="nerve", authid="analyzer-1", authrole="analyzer"))
    assert binder.joined.called
    assert connection.SEND_LIMIT == (framing.AT_ONCE_LIMIT if at_once else 128 * 1024)
