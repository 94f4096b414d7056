"""`nerve recorder` against a real router, orchestrator and simulator: queries, restart, SIGKILL, full disk, bad store."""

import time

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer

from components.history.store import STORE_FILE, open_store
from components.testing.live import EventLog, call_until, join, sleep, wait_until

HOST = "sim-0000"


@pytest.fixture
def simulator(start, orchestrator):
    """Three simulated hosts measuring at 1 Hz through the session's orchestrator."""
    return start("tracker", "--hosts", "3", "--seed", "7")


def recorder_in(start, data_dir):
    """A `nerve recorder` keeping its store in data_dir."""
    return start("recorder", "--log-level", "info", env={"NERVE_DATA_DIR": str(data_dir)})


@defer.inlineCallbacks
def recorded(session, since, enough=1, timeout=30):
    """HOST's 1 s points since `since` once at least `enough` are there (an unknown host counts as "not yet")."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = yield session.call("nerve.history.range", HOST, since, time.time() + 5, 1)
            if len(answer["ts"]) >= enough:
                return answer
        except ApplicationError as error:
            if error.error not in ("nerve.error.not_found", "wamp.error.no_such_procedure"):
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {enough} of {HOST}'s samples in the recorder")
        yield sleep(0.3)


@defer.inlineCallbacks
def missing_from(session, answer, since, until):
    """The timestamps of HOST's samples the orchestrator holds between since and until that `answer` lacks."""
    window = yield session.call("nerve.history", HOST, since)
    have = {round(ts, 3) for ts in answer["ts"]}
    return [sample["ts"] for sample in window["samples"] if sample["ts"] < until and round(sample["ts"], 3) not in have]


@pytest_twisted.inlineCallbacks
def test_ranges_come_from_the_recorder_and_bad_queries_get_nerve_error_uris(start, simulator, dashboard, tmp_path):
    recorder_in(start, tmp_path)
    began = time.time()
    answer = yield recorded(dashboard, began - 60, enough=3)
    assert answer["step"] == 1 and answer["ts"] == sorted(answer["ts"]) and "min" not in answer
    assert len(answer["series"]["cpu"]) == len(answer["ts"]) and all(0 <= value <= 100 for value in answer["series"]["cpu"])
    hour = yield dashboard.call("nerve.history.range", HOST, time.time() - 3600, time.time())
    assert hour["step"] == 60 and set(hour["min"]) == set(hour["series"]) == set(hour["max"])
    assert all(low <= mean <= high for low, mean, high in zip(hour["min"]["cpu"], hour["series"]["cpu"], hour["max"]["cpu"])
               if mean is not None)
    now = time.time()
    bad = [(("no-such-host", now - 60, now), "nerve.error.not_found", "no-such-host"),
           ((HOST, now, now - 60), "nerve.error.invalid_argument", "before until"),
           ((HOST, now - 60, now, 7), "nerve.error.invalid_argument", "step must be one of 1, 60, 3600"),
           ((HOST, now - 30 * 86400, now, 1), "nerve.error.invalid_argument", "more than 100,000"),
           ((HOST, "yesterday", now), "nerve.error.invalid_argument", "since must be epoch seconds")]
    for args, uri, words in bad:
        with pytest.raises(ApplicationError) as refused:
            yield dashboard.call("nerve.history.range", *args)
        assert refused.value.error == uri and words in refused.value.args[0], refused.value
    # Its first samples may all have come from the gap fill at join: wait for the first nerve.samples event too.
    stats = yield call_until(dashboard, "nerve.recorder.stats", lambda stats: stats["received"]["events"] >= 1,
                             timeout=10, message="a nerve.samples event received by the recorder")
    assert stats["state"] == "recording" and stats["last_error"] is None and stats["disk_free"] > 0
    assert set(stats["tiers"]) == {"1s", "1m", "1h"}


@pytest_twisted.inlineCallbacks
def test_a_restarted_recorder_fills_its_gap_from_the_orchestrator(start, simulator, dashboard, tmp_path):
    first = recorder_in(start, tmp_path)
    began = time.time()
    seen = yield recorded(dashboard, began - 5)
    assert first.stop() == 0
    stopped = time.time()
    store = open_store(tmp_path)
    try:  # a stop commits what memory held: every sample served before it is on disk
        kept = store.range(HOST, began - 5, stopped, 0)["ts"]
    finally:
        store.close()
    assert set(seen["ts"]) <= set(kept), (seen["ts"], kept)
    yield sleep(4)  # measurements go on while no recorder runs
    recorder_in(start, tmp_path)
    answer = yield call_until(dashboard, "nerve.history.range", lambda answer: answer["ts"] and answer["ts"][-1] > stopped + 5,
                              HOST, began, time.time() + 30, 1, timeout=30, interval=0.3, message="samples after the restart")
    missing = yield missing_from(dashboard, answer, began, answer["ts"][-1])
    assert not missing, f"samples lost around the restart at {stopped:.1f}: {missing}"
    stats = yield dashboard.call("nerve.recorder.stats")
    assert stats["received"]["gap_filled"] >= 3


@pytest_twisted.inlineCallbacks
def test_after_a_sigkill_the_store_opens_with_all_but_the_last_second(start, simulator, dashboard, tmp_path):
    recorder = recorder_in(start, tmp_path)
    yield recorded(dashboard, time.time(), enough=3)  # live samples, committed second by second
    seen = yield dashboard.call("nerve.history.range", HOST, time.time() - 60, time.time() + 5, 1)
    recorder.kill()
    store = open_store(tmp_path)
    try:
        kept = store.range(HOST, time.time() - 60, time.time() + 5, 0)["ts"]
    finally:
        store.close()
    # What arrived since the last commit (one commit interval, 1 s) is all a kill may lose; 0.5 s for timer jitter.
    assert kept and kept[-1] >= seen["ts"][-1] - 1.5, (kept[-1:], seen["ts"][-1])
    assert kept[:len(seen["ts"]) - 2] == seen["ts"][:len(seen["ts"]) - 2]


@pytest_twisted.inlineCallbacks
def test_a_store_it_cannot_read_stops_the_recorder_naming_the_file_and_is_left_untouched(start, orchestrator, tmp_path):
    path = tmp_path / STORE_FILE
    path.write_bytes(b"\x00garbage that is no SQLite database" * 100)
    before = path.read_bytes()
    recorder = recorder_in(start, tmp_path)
    yield wait_until(lambda: not recorder.running(), timeout=30, message="the recorder to stop")
    assert recorder.process.returncode == 1
    assert f"cannot read the history store {path}" in recorder.output() and "left untouched" in recorder.output()
    assert path.read_bytes() == before


@pytest_twisted.inlineCallbacks
def test_samples_events_add_under_a_tenth_to_the_routers_messages_per_host(start, router, orchestrator, tmp_path):
    hosts = 100
    start("tracker", "--hosts", str(hosts), "--seed", "3")
    recorder_in(start, tmp_path)
    operator = yield join(router.rawsocket_url, "operator", "samples-counter", router.ticket("operator", "samples-counter"),
                          serializers=("msgpack",))
    events = EventLog()
    try:
        yield operator.subscribe(events, "nerve.samples")
        yield wait_until(lambda: any(len(event["hosts"]) == hosts for event in events.payloads()), timeout=30,
                         message=f"a nerve.samples event with all {hosts} hosts")
        before, counted = (yield operator.call("nerve.router.stats")), len(events.payloads())
        yield sleep(5)
        after, samples_events = (yield operator.call("nerve.router.stats")), len(events.payloads()) - counted
    finally:
        yield operator.leave()
    seconds = after["now"] - before["now"]
    total = after["received_total"] + after["sent_total"] - before["received_total"] - before["sent_total"]
    # Each nerve.samples event is one message in and one out per subscriber (the recorder and this test).
    samples_messages = samples_events * 3
    assert samples_events <= seconds + 1, "one event a second for up to 1,000 hosts"
    growth = samples_messages / (total - samples_messages)
    assert growth <= 0.10, f"nerve.samples grew the router's messages by {growth:.1%} ({samples_messages} of {total})"
