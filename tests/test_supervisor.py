"""`nerve up` heals the mesh: a child that exits is restarted, one that keeps crashing is left stopped, a signal stops
everything in order.

The policy is tested with plain calls on a fake clock; the Supervisor with tiny Python children in this process's
reactor; `nerve up` itself as a subprocess on its own port, secrets file and runtime directory (the suite's router is
not touched), its children found with psutil by their command lines.
"""

import io
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import pytest_twisted
from autobahn.wamp.types import SubscribeOptions
from twisted.internet import reactor

from components.node import supervisor as supervisor_module
from components.node.routerctl import port_open
from components.node.supervisor import CHILDREN_TOPIC, STATUS_URI, Child, RestartPolicy, Supervisor, SupervisorStatus
from components.testing.fake import FakeMesh
from components.testing.live import EventLog, MeshUpProcess, call_until, wait_for_callees, wait_until


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def crash_after(policy, clock, seconds):
    """The child ran `seconds`, then exited: the policy's answer."""
    policy.started()
    clock.now += seconds
    return policy.exited()


def test_restart_policy_backs_off_caps_resets_and_gives_up():
    clock = FakeClock()
    policy = RestartPolicy(clock)
    # Crashing at once: 1, 2, 4, 8 s, and the 5th exit within 2 minutes leaves it stopped.
    delays = []
    for _ in range(5):
        delays.append(crash_after(policy, clock, 0.5))
        clock.now += delays[-1] or 0
    assert delays == [1, 2, 4, 8, None]
    assert policy.describe() == "5 times in 2 minutes"

    # Exits far enough apart never give up; the delay doubles up to 30 s while runs stay short of a minute.
    clock, delays = FakeClock(), []
    policy = RestartPolicy(clock)
    for _ in range(8):
        delays.append(crash_after(policy, clock, 45))
        clock.now += delays[-1]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    # A minute of healthy running resets the backoff.
    assert crash_after(policy, clock, 60) == 1
    assert crash_after(policy, clock, 45) == 2


def test_an_at_once_policy_restarts_a_healthy_child_without_waiting_and_backs_off_from_its_second_exit():
    clock = FakeClock()
    policy = RestartPolicy(clock, at_once=True)
    delays = []
    for _ in range(5):
        delays.append(crash_after(policy, clock, 0.5))
        clock.now += delays[-1] or 0
    assert delays == [0, 1, 2, 4, None]
    clock = FakeClock()
    policy = RestartPolicy(clock, at_once=True)
    assert [crash_after(policy, clock, 45) for _ in range(2)] == [0, 1]
    assert crash_after(policy, clock, 60) == 0  # healthy again: the next exit restarts at once


def test_restart_policy_counts_only_the_exits_of_the_last_two_minutes():
    clock = FakeClock()
    policy = RestartPolicy(clock)
    for _ in range(4):
        assert crash_after(policy, clock, 1) is not None
    clock.now += 121  # the four exits age out of the window
    assert crash_after(policy, clock, 1) is not None


def test_the_status_component_answers_and_publishes_on_join_and_on_every_change():
    fake = FakeMesh()
    supervisor = Supervisor(reactor)
    fake.bind(SupervisorStatus(supervisor, fake.mesh))
    on_join = fake.published_on(CHILDREN_TOPIC)
    assert len(on_join) == 1 and on_join[0]["children"] == [] and on_join[0]["pid"] == os.getpid()
    child = Child("analyzer-1", ["true"], {}, "analyzer", RestartPolicy())
    child.state, child.restarts = "running", 2
    child.last_exit = {"reason": "SIGKILL", "code": None, "signal": "SIGKILL", "at": 1.0, "ran_seconds": 3.0}
    supervisor.children.append(child)
    supervisor._changed()
    published = fake.published_on(CHILDREN_TOPIC)
    assert len(published) == 2 and published[-1]["children"][0]["restarts"] == 2
    answer = fake.call(STATUS_URI)
    assert answer["children"] == [{"name": "analyzer-1", "group": "analyzer", "state": "running", "pid": None,
                                   "restarts": 2, "started_at": None, "last_exit": child.last_exit,
                                   "restart_at": None, "log": None}]


def quick_policy():
    """The real policy with short delays, so a crash loop takes a second, not 15."""
    return RestartPolicy(first_delay=0.05, max_delay=0.2)


def python(code):
    return [sys.executable, "-c", code]


@pytest.fixture
def supervisor(tmp_path):
    lines = []
    instance = Supervisor(reactor, log_dir=tmp_path / "logs", say=lines.append, stdout=io.StringIO(),
                          stderr=io.StringIO())
    instance.lines = lines
    yield instance
    instance.kill_all()
    instance.close()


@pytest_twisted.inlineCallbacks
def test_a_child_crashing_5_times_in_2_minutes_is_left_stopped_and_the_rest_keeps_running(supervisor, tmp_path):
    crasher = supervisor.add("crasher", python("import sys; print('about to fail'); sys.exit(3)"), os.environ,
                             "worker", policy=quick_policy())
    sleeper = supervisor.add("sleeper", python("import time; time.sleep(60)"), os.environ, "other",
                             policy=quick_policy())
    yield wait_until(lambda: crasher.state == "failed", timeout=15, message="the crasher to be left stopped")
    log_path = tmp_path / "logs" / "crasher.log"
    restarts = [line for line in supervisor.lines if line.startswith("crasher exited (exit code 3)")]
    assert len(restarts) == 4 and all("restarting it in" in line for line in restarts), supervisor.lines
    assert (f"crasher exited 5 times in 2 minutes (last: exit code 3); left stopped, the rest keeps running; "
            f"its log: {log_path}") in supervisor.lines
    assert log_path.read_text().count("about to fail\n") == 5
    assert sleeper.running and sleeper.restarts == 0 and sleeper.state == "running"
    record = next(child for child in supervisor.status()["children"] if child["name"] == "crasher")
    assert record["state"] == "failed" and record["restarts"] == 4 and record["pid"] is None
    assert record["last_exit"]["reason"] == "exit code 3" and record["last_exit"]["code"] == 3
    yield supervisor.stop_all(order=("worker", "other"))
    assert not sleeper.running and sleeper.state == "stopped"


SIGNALLED_CHILD = """
import signal, sys, time
def leave(*_):
    time.sleep(0.2)  # leaving takes a moment: the next group must wait for it
    with open(sys.argv[1], "a") as record:
        record.write(sys.argv[2] + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, leave if sys.argv[3] == "leaves" else signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


@pytest_twisted.inlineCallbacks
def test_stop_all_stops_group_after_group_and_kills_what_ignores_sigterm(supervisor, tmp_path):
    record = tmp_path / "stopped.txt"
    plan = [("router", "router", "leaves"), ("analyzer-1", "analyzer", "leaves"), ("stubborn", "analyzer", "ignores"),
            ("tracker", "producer", "leaves"), ("orchestrator", "orchestrator", "leaves")]
    children = [supervisor.add(name, [sys.executable, "-c", SIGNALLED_CHILD, str(record), name, how], os.environ, group)
                for name, group, how in plan]
    for child in children:
        yield wait_until(lambda: "ready" in child.log_path.read_text().splitlines(), timeout=10,
                         message=f"{child.name} ready")
    yield supervisor.stop_all(order=("producer", "analyzer", "orchestrator", "router"), grace=1)
    assert record.read_text().split() == ["tracker", "analyzer-1", "orchestrator", "router"]
    assert "stubborn did not stop in 1 s; killing" in supervisor.lines
    assert [line for line in supervisor.lines if line.startswith("stopped ")] == [
        "stopped tracker", "stopped analyzer-1, stubborn", "stopped orchestrator", "stopped router"]
    assert all(child.state == "stopped" and not child.running for child in children)
    assert not [line for line in supervisor.lines if "restarting" in line]


SPARE = """
import sys
print("loaded", flush=True)
if sys.stdin.readline() != "start\\n":
    sys.exit(0)
print("started from the spare", flush=True)
import time; time.sleep(60)
"""


@pytest_twisted.inlineCallbacks
def test_a_child_with_a_spare_is_replaced_by_it_and_a_stop_sends_the_next_spare_away(supervisor, monkeypatch):
    monkeypatch.setattr(supervisor_module, "SPARE_AFTER", 0.1)
    child = supervisor.add("router", python("import time; print('cold start', flush=True); time.sleep(60)"),
                           os.environ, "router", policy=quick_policy(), spare_command=python(SPARE))
    yield wait_until(lambda: child.spare is not None and "loaded" in child.log_path.read_text(), timeout=10,
                     message="a loaded spare")
    spare_pid, first_pid = child.spare.pid, child.pid
    os.kill(first_pid, signal.SIGKILL)
    yield wait_until(lambda: child.pid == spare_pid and "started from the spare" in child.log_path.read_text(),
                     timeout=10, message="the spare running as the child")
    log = child.log_path.read_text()
    assert log.splitlines().count("cold start") == 1 and f"started pid {spare_pid} (the spare, loaded ahead)" in log, log
    assert child.restarts == 1 and child.state == "running"
    yield wait_until(lambda: child.spare is not None and child.spare.pid != spare_pid, timeout=10,
                     message="the next spare")
    next_spare = child.spare.pid
    yield supervisor.stop_all(order=("router",), grace=1)
    # Its exit, as this process (its parent) reaped it: a spare told nothing more leaves by itself.
    yield wait_until(lambda: f"spare pid {next_spare} exited (exit code 0) before it was needed"
                     in child.log_path.read_text(), timeout=5, message="the spare's exit in its child's log")
    assert child.state == "stopped" and child.spare is None


KILLED_SUPERVISOR = """
import os, sys
from twisted.internet import reactor
from components.node.supervisor import Supervisor

supervisor = Supervisor(reactor)
def go():
    child = supervisor.add("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], os.environ, "x")
    print(child.pid, flush=True)
reactor.callWhenRunning(go)
reactor.run()
"""


def test_children_die_with_a_supervisor_that_is_killed_outright():
    parent = subprocess.Popen([sys.executable, "-c", KILLED_SUPERVISOR], stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        deadline = time.monotonic() + 10
        while any(part.endswith("launch.py") for part in child.cmdline()):  # wait for launch.py's exec
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert child.ppid() == parent.pid and os.getsid(child.pid) == child.pid
        parent.kill()
        parent.wait()
        gone, alive = psutil.wait_procs([child], timeout=5)
        assert not alive, "the child outlived its supervisor"
    finally:
        parent.kill()
        parent.wait()


# -- `nerve up` itself ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nerve_up(tmp_path_factory):
    up = MeshUpProcess(tmp_path_factory.mktemp("nerve-up"), "--analyzers", "2", "--compute", "0")
    try:
        yield up.wait_ready()
    finally:
        up.stop()


def child_record(status, name):
    return next(child for child in status["children"] if child["name"] == name)


@pytest_twisted.inlineCallbacks
def test_a_killed_analyzer_is_restarted_within_seconds_and_analysis_goes_on(nerve_up):
    session = yield nerve_up.join()
    yield wait_for_callees(session, "nerve.analyze", 2, timeout=40)
    yield wait_for_callees(session, "nerve.stats", 1, timeout=40)  # the orchestrator may join after the analyzers
    stats = yield call_until(session, "nerve.stats", lambda stats: stats.get("analysed", 0) > 0, timeout=30,
                             message="a first analysis")
    victim = nerve_up.child("analyzer", "--authid", "analyzer-1")
    assert victim is not None, [process.cmdline() for process in nerve_up.children()]
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    back = yield wait_until(lambda: (nerve_up.child("analyzer", "--authid", "analyzer-1") or victim).pid != victim.pid,
                            timeout=10, message="a new analyzer-1 process")
    assert back
    yield wait_for_callees(session, "nerve.analyze", 2, timeout=10)
    took = time.monotonic() - killed
    assert took < 8, f"analyzer-1 served again only {took:.1f} s after it was killed"
    assert nerve_up.running()
    assert "nerve up: analyzer-1 exited (SIGKILL) after" in nerve_up.output(), nerve_up.output()
    status = yield call_until(session, STATUS_URI,
                              lambda status: child_record(status, "analyzer-1")["restarts"] == 1, timeout=5)
    record = child_record(status, "analyzer-1")
    assert record["state"] == "running" and record["last_exit"]["reason"] == "SIGKILL"
    assert record["last_exit"]["signal"] == "SIGKILL" and record["last_exit"]["code"] is None
    assert child_record(status, "analyzer-2")["restarts"] == 0 and child_record(status, "router")["state"] == "running"
    # Analysis goes on, served by both analyzers again.
    yield call_until(session, "nerve.stats", lambda later: later.get("analysed", 0) > stats["analysed"] + 2, timeout=15,
                     message="more analyses after the restart")
    # Anonymous eyes (the dashboard) read the same: the retained event at once, and the procedure.
    dashboard = yield nerve_up.join("anonymous")
    events = EventLog()
    yield dashboard.subscribe(events, "nerve.supervisor.children",
                              options=SubscribeOptions(get_retained=True, details_arg="details"))
    retained = yield wait_until(lambda: events.payloads(), timeout=5, message="the retained children event")
    assert child_record(retained[-1], "analyzer-1")["restarts"] == 1
    seen = yield dashboard.call("nerve.supervisor.status")
    assert child_record(seen, "analyzer-1")["last_exit"]["reason"] == "SIGKILL"
    yield dashboard.leave()
    yield session.leave()


@pytest_twisted.inlineCallbacks
def test_the_dashboards_mesh_panel_shows_restarts_and_the_last_exit(nerve_up):
    from tests.test_dashboard import CHROMIUM, Browser

    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (make chromium)")
    session = yield nerve_up.join()
    yield call_until(session, STATUS_URI, lambda status: child_record(status, "tracker")["pid"],
                     timeout=20, message="the tracker running")
    tracker = nerve_up.child("components", "tracker")
    assert tracker is not None
    tracker.send_signal(signal.SIGKILL)
    yield call_until(session, STATUS_URI,
                     lambda status: child_record(status, "tracker")["restarts"] == 1, timeout=10,
                     message="the tracker restarted")
    browser = Browser()  # blocks while Chromium starts, as test_dashboard's fixture does
    try:
        page = yield browser.open(f"http://127.0.0.1:{nerve_up.port}/")
        row = "document.querySelector(\"#mesh-panel tr[data-child='tracker']\")"
        text = yield page.wait_for(f"() => {{ const r = {row}; return r && !r.closest('[hidden]') && "
                                   f"r.querySelector('[data-col=restarts]').textContent === '1' && r.textContent }}",
                                   timeout=10)
        assert "SIGKILL" in text and "running" in text, text
        names = yield page.evaluate("() => [...document.querySelectorAll('#mesh-panel tr[data-child]')]"
                                    ".map(r => r.dataset.child)")
        assert names[0] == "router" and {"analyzer-1", "analyzer-2", "orchestrator", "solver"} <= set(names)
        assert page.errors() == [], page.console
    finally:
        browser.close()
    yield session.leave()


def spare_router(up):
    """`nerve up`'s spare router process (psutil), or None."""
    for process in up.children():
        try:
            if "components.node.warmrouter" in process.cmdline():
                return process
        except psutil.Error:
            continue
    return None


@pytest_twisted.inlineCallbacks
def test_a_killed_router_is_replaced_by_its_loaded_spare_and_analysis_goes_on(nerve_up):
    session = yield nerve_up.join()
    spare = yield wait_until(lambda: spare_router(nerve_up), timeout=30, message="a spare router beside the running one")
    status = yield nerve_up.status(session)
    yield session.leave()
    router = psutil.Process(child_record(status, "router")["pid"])
    assert router.pid != spare.pid and "crossbar" in " ".join(router.cmdline())
    router.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    yield wait_until(lambda: not port_open(nerve_up.port), timeout=5, message="the port closed")
    yield wait_until(lambda: port_open(nerve_up.port), timeout=20, message="the router back")
    took = time.monotonic() - killed
    session = yield nerve_up.join()
    status = yield call_until(session, STATUS_URI, lambda status: child_record(status, "router")["restarts"] == 1,
                              timeout=5)
    assert child_record(status, "router")["pid"] == spare.pid, (status, spare.pid)
    assert "nerve up: router exited (SIGKILL) after" in nerve_up.output(), nerve_up.output()
    stats = yield call_until(session, "nerve.stats", lambda stats: stats.get("analysed", 0) > 0, timeout=20,
                             message="analysis on the new router")
    yield call_until(session, "nerve.stats", lambda later: later.get("analysed", 0) > stats["analysed"], timeout=15,
                     message="analysis going on")
    yield session.leave()
    print(f"the router was back {took:.1f} s after SIGKILL")


def test_sigterm_stops_every_child_in_order_and_frees_the_port(nerve_up):
    everything = [process for child in nerve_up.children() for process in [child, *child.children(recursive=True)]]
    assert len(everything) >= 6  # router (and its worker), orchestrator, two analyzers, solver, tracker
    nerve_up.process.send_signal(signal.SIGTERM)
    assert nerve_up.process.wait(timeout=40) == 0, nerve_up.output()
    output = nerve_up.output()
    stopped = [line.split("stopped ", 1)[1] for line in output.splitlines() if line.startswith("nerve up: stopped ")]
    # The orchestrator group holds the orchestrator and the stores beside it (alert keeper, recorder, ...).
    assert [stopped[:3], len(stopped), stopped[-1]] == [["tracker", "solver", "analyzer-1, analyzer-2"], 5, "router"], output
    assert {"orchestrator", "alerts"} <= set(stopped[3].split(", ")), output
    gone, alive = psutil.wait_procs(everything, timeout=5)
    assert not alive, [process.cmdline() for process in alive]
    assert not port_open(nerve_up.port)
    assert not [connection for connection in psutil.net_connections("tcp")
                if connection.laddr and connection.laddr.port == nerve_up.port and connection.status == psutil.CONN_LISTEN]
