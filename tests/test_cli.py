"""The `nerve` command line against a real router: help, usage errors, send/listen, credentials, user components."""

import os
import subprocess
import sys
import time

import pytest
import pytest_twisted
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer

from components.testing.live import call_until, join, wait_until

COMMANDS = ["up", "router", "tracker", "analyzer", "orchestrator", "watch", "listen", "run", "credential", "alert", "alert send",
            "compute", "solver", "tsp", "tsp solve"]


def nerve(*args, env=None, timeout=30):
    """Run a `nerve` command to completion."""
    return subprocess.run([sys.executable, "-m", "components", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = nerve(*command.split(), "--help")
    assert result.returncode == 0 and "Usage: " in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (["tracker", "--bogus"], "No such option"),
    (["tracker", "--interval", "0"], "interval must be between"),
    (["analyzer", "--concurrency", "0"], "concurrency"),
    (["analyzer", "--thresholds", "cpu=90:10"], "thresholds"),
    (["tracker", "--router", "http://x"], "router URL"),
    (["listen", "--on", "Not A Topic"], "topic"),
    (["orchestrator", "--batch-size", "0"], "batch size"),
    (["analyzer", "--nice", "20"], "--nice"),
    (["alert", "send", "--on", "app.deploy", "--nice", "5", "done"], "No such option '--nice'"),
    (["tsp", "solve", "--nice", "5", "x.tsp"], "No such option '--nice'"),
    (["frobnicate"], "No such command"),
])
def test_bad_flags_print_usage_and_exit_2(args, fragment):
    result = nerve(*args)
    assert result.returncode == 2, result
    assert "Usage:" in result.stderr and fragment in result.stderr


@pytest_twisted.inlineCallbacks
def test_alert_send_is_received_by_listen(router, start):
    listener = start("listen", "--on", "nerve.alert.")
    yield wait_until(lambda: "joined realm" in listener.output(), timeout=15, message="listener joined")
    sent = nerve("alert", "send", "--on", "nerve.alert.db-07", "disk almost full", env=router.env())
    assert sent.returncode == 0, sent.stderr
    yield wait_until(lambda: "disk almost full" in listener.output(), timeout=5, message="alert printed by listen")
    line = next(line for line in listener.output().splitlines() if "disk almost full" in line)
    assert "nerve.alert.db-07" in line


def test_alert_send_outside_the_operators_topics_is_refused(router):
    refused = nerve("alert", "send", "--on", "nerve.measure.db-07", "fake", env=router.env())
    assert refused.returncode == 1 and "not_authorized" in refused.stderr


@pytest_twisted.inlineCallbacks
def test_wrong_ticket_fails_with_a_message_naming_the_authid(router, start):
    tracker = start("tracker", "--authid", "web-01", "--host-id", "web-01", "--ticket", "not-the-ticket")
    yield wait_until(lambda: not tracker.running(), timeout=20, message="tracker to give up")
    assert tracker.process.returncode == 3
    output = tracker.output()
    assert "authid 'web-01'" in output and "wrong ticket" in output and "Traceback" not in output


@pytest_twisted.inlineCallbacks
def test_example_component_counts_alerts_and_answers_calls(router, start):
    component = start("run", "examples/alert_counter.py")
    yield wait_until(lambda: "joined realm" in component.output(), timeout=15, message="example joined")
    for _ in range(2):
        assert nerve("alert", "send", "--on", "nerve.alert.cache-3", "evictions high", env=router.env()).returncode == 0
    operator = yield join(router.rawsocket_url, "operator", "test-operator", router.ticket("operator", "test-operator"))
    yield call_until(operator, "app.alerts.count", lambda count: count == 2, "cache-3", message="both alerts counted")
    yield operator.leave()


def thread_nice_values(pid):
    """The nice value of every thread of process pid (on Linux each thread has its own)."""
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest_twisted.inlineCallbacks
def test_compute_yields_the_cpu_and_any_component_can_be_told_to(router, start):
    processes = {"analyzer": start("analyzer"), "compute": start("compute"), "simulator": start("tracker", "--hosts", "2"),
                 "tracker": start("tracker"), "orchestrator": start("orchestrator"),
                 "alerts": start("alerts", "--nice", "3")}
    for name, process in processes.items():
        yield wait_until(lambda: "joined realm" in process.output(), timeout=20, message=f"the {name} joined")
    assert {name: thread_nice_values(process.process.pid) for name, process in processes.items()} == {
        "analyzer": {0}, "compute": {10}, "simulator": {0}, "tracker": {0}, "orchestrator": {0}, "alerts": {3}}


HOLDING_COMPONENT = """
from components import on, on_join, procedure

seen = []


@on("app.hold.tick")
def tick(value):
    seen.append(value)


@on_join(hold_events=True)
def load(mesh):
    return mesh.call("app.hold.gate")  # the test answers when the hook may end


@procedure("app.hold.seen")
def seen_so_far():
    return seen
"""


STOPPING_COMPONENT = """
from components import on_stop, procedure

MARK = {mark!r}
calls = []


@procedure("app.stop.count")
def count():
    calls.append(1)
    return len(calls)


@on_stop
def write_down():
    with open(MARK, "w") as mark:
        mark.write(f"stopped after {{len(calls)}} calls")
"""


@pytest_twisted.inlineCallbacks
def test_an_on_stop_hook_runs_once_when_the_process_stops_on_sigterm(router, start, tmp_path):
    mark = tmp_path / "mark"
    path = tmp_path / "stopping.py"
    path.write_text(STOPPING_COMPONENT.format(mark=str(mark)))
    component = start("run", str(path))
    operator = yield join(router.rawsocket_url, "operator", "stop-test", router.ticket("operator", "stop-test"))
    yield call_until(operator, "app.stop.count", lambda count: count >= 2, message="the component's procedure")
    assert not mark.exists()
    assert component.stop() == 0  # SIGTERM
    assert mark.read_text() == "stopped after 2 calls"
    yield operator.leave()


@pytest_twisted.inlineCallbacks
def test_events_wait_for_a_join_hook_that_holds_them_then_come_in_order(router, start, tmp_path):
    # In the role `nerve run` has, which may register app.* procedures too.
    operator = yield join(router.rawsocket_url, "component", "hold-test", router.ticket("component", "hold-test"))
    asked, gate = defer.Deferred(), defer.Deferred()
    yield operator.register(lambda: asked.callback(None) or gate, "app.hold.gate")
    path = tmp_path / "holding.py"
    path.write_text(HOLDING_COMPONENT)
    start("run", str(path))
    yield asked  # the hook runs: its session's subscriptions exist
    for value in (1, 2, 3):
        yield operator.publish("app.hold.tick", value, options=PublishOptions(acknowledge=True))
    # The router writes the events to the component before this call, on the same connection: they have arrived
    # and wait for the hook, while the procedure answers.
    assert (yield operator.call("app.hold.seen")) == []
    gate.callback(None)
    yield call_until(operator, "app.hold.seen", lambda seen: seen == [1, 2, 3], message="the held events, in order")
    yield operator.leave()


def test_credential_prints_the_ticket_the_router_accepts(router):
    result = nerve("credential", "tracker", "web-01", "--secrets-file", str(router.secrets_file))
    assert result.returncode == 0 and result.stdout.strip() == router.ticket("tracker", "web-01")


def router_nobody_runs():
    """An environment pointing components at a port where no router listens."""
    from components.node.routerctl import free_port

    return dict(os.environ, NERVE_ROUTER=f"rs://127.0.0.1:{free_port()}")


def test_alert_send_without_a_router_says_once_what_it_waits_for_then_exits_1():
    started = time.monotonic()
    result = nerve("alert", "send", "--on", "app.deploy", "hello", env=router_nobody_runs())
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("waiting for the router at rs://127.0.0.1:") == 1, result.stderr
    assert "nerve up" in result.stderr and "gave up" in result.stderr and "Connection failed" not in result.stderr
    assert took < 20, f"gave up after {took:.1f} s; about 5 s of retries expected (margin for a slow start)"


@pytest.mark.parametrize("command", [["listen", "--on", "nerve.alert."], ["watch"]])
def test_interactive_commands_without_a_router_say_once_what_they_wait_for(command):
    process = subprocess.Popen([sys.executable, "-m", "components", *command], env=router_nobody_runs(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        lines = []
        while not any("waiting for the router" in line for line in lines):
            assert time.monotonic() < deadline, f"no waiting notice in {lines}"
            lines.append(process.stderr.readline())
        # Several retries happen in 4 s (at most 2 s apart): none of them may print another line.
        time.sleep(4)
    finally:
        process.terminate()
        rest = process.communicate(timeout=10)[1]
    output = "".join(lines) + rest
    assert output.count("waiting for the router") == 1 and "Connection failed" not in output, output


@pytest.mark.parametrize("command, hidden", [
    ("analyzer", ["--extra-work-ms", "--tuning"]),
    ("orchestrator", ["--analysis-wire", "--tuning"]),
    ("tracker", ["--tuning", "--tcp-nodelay", "--large-messages-at-once"]),
])
def test_options_only_benchmarks_use_stay_out_of_help_but_work(command, hidden):
    shown = nerve(command, "--help").stdout
    assert not [option for option in hidden if option in shown], shown
    refused = nerve(command, "--tuning", "tcp_nodelay=sometimes")
    assert refused.returncode == 2 and "NAME=on|off" in refused.stderr
