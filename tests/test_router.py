"""Router-side tuning that runs inside the Crossbar worker, checked as plain code."""

import ast
import gc
import importlib
import inspect
import pprint
from operator import itemgetter

import pytest
from autobahn.twisted.rawsocket import WampRawSocketProtocol
from crossbar.router import broker as crossbar_broker
from crossbar.router import router as crossbar_router
from twisted.logger import formatEvent

from components.mesh import rawsocket as framing
from components.mesh.errors import ConfigError
from components.mesh.collector import collection_stats
from router import tuning
from router.tuning import LAZY_LOG_HELPERS, LazyText, deferred

LOG_METHODS = {"debug", "info", "warn", "error", "failure", "trace", "critical"}


def test_lazy_text_prints_what_the_function_returns_when_a_log_line_is_written():
    value = {"allow": True, "disclose": False, "cache": True, "nested": {"uri": "nerve.measure." + "x" * 80}}
    event = {"log_format": "authorization:\n{authorization}", "authorization": deferred(pprint.pformat)(value)}
    assert formatEvent(event) == "authorization:\n" + pprint.pformat(value)
    assert f"{LazyText(str, [1, 2])!s:>8}" == "  [1, 2]"
    assert repr(LazyText(lambda: "text")) == "text"


def test_crossbar_formats_lazily_unless_the_tuning_turns_it_off():
    try:
        tuning.configure()
        tuning.configure()  # idempotent: wrappers are not wrapped again
        assert crossbar_router.pformat.eager is pprint.pformat
        assert isinstance(crossbar_broker.hlid("nerve.measure.a"), LazyText)
        assert "nerve.measure.a" in str(crossbar_broker.hlid("nerve.measure.a"))
        tuning.configure({"lazy_debug_format": False})
        assert crossbar_router.pformat is pprint.pformat
        assert isinstance(crossbar_broker.hlid("nerve.measure.a"), str)
        assert tuning.settings == dict(tuning.DEFAULT_SETTINGS, lazy_debug_format=False)
    finally:
        tuning.restore()  # this is the test process, not a router worker
    assert tuning.settings == dict(tuning.DEFAULT_SETTINGS) and crossbar_router.pformat is pprint.pformat


def test_the_router_freezes_its_startup_heap_unless_the_tuning_turns_it_off():
    # Frozen, Crossbar's own objects are no longer walked by the full collections that stop all routing.
    try:
        tuning.configure()
        assert gc.get_freeze_count() > 10000
        # Reported from a count taken at freezing: counting again walks every frozen object (16 ms in a worker).
        # A frozen object freed since is still in that count, so the two may differ by a few.
        assert 0 <= collection_stats()["frozen"] - gc.get_freeze_count() < 100
        tuning.configure({"freeze_startup_heap": False})
        assert gc.get_freeze_count() == 0 == collection_stats()["frozen"]
    finally:
        tuning.restore()


def test_the_router_joins_a_large_messages_reads_once_unless_the_tuning_turns_it_off():
    try:
        tuning.configure()
        assert WampRawSocketProtocol.dataReceived is framing._data_received_joining_once
        tuning.configure({"join_reads_once": False})
        assert WampRawSocketProtocol.dataReceived is framing._twisted_data_received
    finally:
        tuning.restore()


def test_the_router_moves_large_messages_at_once_unless_the_tuning_turns_it_off():
    try:
        tuning.configure()
        assert framing._reading_at_once
        tuning.configure({"large_messages_at_once": False})
        assert not framing._reading_at_once
    finally:
        tuning.restore()


@pytest.mark.parametrize("module_name", sorted(LAZY_LOG_HELPERS))
def test_crossbar_uses_the_deferred_helpers_only_as_log_arguments(module_name):
    # A lazy object is safe only where a log line formats it; a crossbar upgrade that concatenates
    # or compares a helper's result must fail here, not in production.
    names = set(LAZY_LOG_HELPERS[module_name])
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    misuses, uses = [], 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in names and not isinstance(parents.get(node), (ast.alias, ast.ImportFrom)):
            call = parents.get(node)
            if not (isinstance(call, ast.Call) and call.func is node):
                misuses.append(f"line {node.lineno}: {node.id} used other than called")
                continue
            outer = parents.get(call)
            while outer is not None and not isinstance(outer, ast.Call):
                outer = parents.get(outer)
            if isinstance(outer, ast.Call) and isinstance(outer.func, ast.Attribute) and outer.func.attr in LOG_METHODS:
                uses += 1
            else:
                misuses.append(f"line {node.lineno}: {node.id}(...) outside a log call")
    assert uses and not misuses, misuses


def test_an_unknown_tuning_name_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match="router tuning: unknown tuning tcp_no_delay; known: tcp_nodelay, "
                                          "lazy_debug_format, freeze_startup_heap, join_reads_once, "
                                          "large_messages_at_once, metering, leave_reasons, hello_deadline"):
        tuning.configure({"tcp_no_delay": False})


def test_runtime_config_hands_tuning_overrides_to_the_router_component():
    from components.node.routerctl import runtime_config

    config = runtime_config(18080, tuning={"lazy_debug_format": False})
    extras = [component.get("extra", {}) for worker in config["workers"] for component in worker.get("components", [])]
    assert extras and all(extra["tuning"] == {"lazy_debug_format": False} for extra in extras)
    defaults = runtime_config(18080)
    assert all("tuning" not in component.get("extra", {})
               for worker in defaults["workers"] for component in worker.get("components", []))


def test_restore_puts_back_what_crossbar_and_autobahn_had():
    from crossbar.router.protocol import WampRawSocketServerProtocol
    from crossbar.router.router import Router

    before = (WampRawSocketServerProtocol.connectionMade, WampRawSocketProtocol.dataReceived, Router.send,
              crossbar_router.pformat, gc.get_freeze_count())
    try:
        tuning.configure()
        assert Router.send is not before[2] and WampRawSocketProtocol.dataReceived is not before[1]
    finally:
        tuning.restore()
    assert (WampRawSocketServerProtocol.connectionMade, WampRawSocketProtocol.dataReceived, Router.send,
            crossbar_router.pformat, gc.get_freeze_count()) == before


@pytest.mark.parametrize("no_delay", [True, False])
def test_the_router_sets_tcp_nodelay_on_rawsocket_connections_unless_the_tuning_turns_it_off(no_delay, monkeypatch):
    from types import SimpleNamespace

    from crossbar.router.protocol import WampRawSocketServerProtocol

    asked = []
    connection = SimpleNamespace(setTcpNoDelay=asked.append)
    # Only nerve's part of connectionMade is under test: Crossbar's own needs a whole router factory.
    monkeypatch.setattr(tuning, "_original_connection_made", lambda protocol: None)
    try:
        tuning.configure({"tcp_nodelay": no_delay})
        protocol = WampRawSocketServerProtocol()
        protocol.transport = connection
        WampRawSocketServerProtocol.connectionMade(protocol)
    finally:
        monkeypatch.undo()  # first, so restore() puts Crossbar's own connectionMade back
        tuning.restore()
    assert asked == ([True] if no_delay else [])
    assert WampRawSocketServerProtocol.connectionMade is tuning._original_connection_made


def test_the_router_records_why_sessions_leave_unless_the_tuning_turns_it_off():
    from crossbar.router.session import RouterSession

    from router import mesh_view

    try:
        tuning.configure({})
        assert RouterSession.onLeave is mesh_view._recording_on_leave
        tuning.configure({"leave_reasons": False})
        assert RouterSession.onLeave is mesh_view._original_on_leave
        tuning.configure({})
    finally:
        tuning.restore()
    assert RouterSession.onLeave is mesh_view._original_on_leave
