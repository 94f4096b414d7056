"""The `nerve` command line against a real router: help, usage errors, send/listen, credentials, user components."""

import subprocess
import sys

import pytest
import pytest_twisted

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


def test_credential_prints_the_ticket_the_router_accepts(router):
    result = nerve("credential", "tracker", "web-01", "--secrets-file", str(router.secrets_file))
    assert result.returncode == 0 and result.stdout.strip() == router.ticket("tracker", "web-01")
