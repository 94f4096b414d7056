"""The orchestrator's logic as plain methods: dedupe, gaps, batching, backpressure, coalescing, publishing."""

import gc
import json
import re
from pathlib import Path
from types import SimpleNamespace

import msgpack
import pytest
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer, task

from components.monitor.analysis import analyze_batch, pack_batch, unpack_batch
from components.monitor.analyzer import Analyzer, AnalyzerConfig
from components.mesh.config import MeshConfig
from components.monitor.interest import TopicInterest, wildcard_matches
from components.mesh.errors import ConfigError, InvalidArgument, NotFound
from components.monitor.orchestrator import (DIGEST_FIELDS, MAX_CALL_BYTES, PACKED_REFUSED_SECONDS, Orchestrator,
                                             OrchestratorConfig, digest_entries)
from components.testing import FakeMesh
from components.testing.live import measurement
from components.monitor.window import as_sample


def opened(hosts):
    """A call's hosts as an analyzer reads them: unpacked if packed, sample rows as {seq, ts, metrics} dicts."""
    if not isinstance(hosts, bytes):
        return hosts
    return [dict(host, samples=[as_sample(row) for row in host["samples"]]) for host in unpack_batch(hosts)]


def hosts_of(call):
    """The hosts of a nerve.analyze call as plain samples; what travelled stays in call.args."""
    return opened(call.args[0])


def pending_seqs(orchestrator, host_id):
    """The seqs of a host's samples waiting for analysis."""
    return [seq for seq, _, _, _ in orchestrator.hosts[host_id].pending]


def analysed(hosts, level="LOW", changes=()):
    """What an analyzer returns for the hosts of one call."""
    return {"analyzer": "analyzer-t", "hosts": [
        {"host_id": host["host_id"], "state": {"n": len(host["samples"])}, "level": level,
         "metrics": {"cpu": {"value": host["samples"][-1]["metrics"]["cpu"], "level": level}}, "changes": list(changes)}
        for host in hosts]}


@pytest.fixture
def clock():
    fake = task.Clock()
    fake.advance(1_800_000_000)
    return fake


def on_fake_mesh(clock, **settings):
    """An orchestrator timed by the test's clock, and the FakeMesh it publishes and calls through."""
    config = OrchestratorConfig(mesh=MeshConfig(role="orchestrator"), **settings)
    fake = FakeMesh(config)
    return Orchestrator(config, fake.mesh, clock=clock.seconds, scheduler=clock), fake


@pytest.fixture
def orchestrator_and_fake(clock):
    orchestrator, fake = on_fake_mesh(clock, batch_size=2, max_pending=5)
    orchestrator.active = True
    return orchestrator, fake


@pytest.fixture
def pipeline(orchestrator_and_fake):
    """An active Orchestrator object on a FakeMesh (not the conftest's orchestrator process)."""
    return orchestrator_and_fake[0]


@pytest.fixture
def fake(orchestrator_and_fake):
    return orchestrator_and_fake[1]


def feed(orchestrator, clock, host_id, seq, cpu=10.0, run="r1"):
    orchestrator.on_measure(measurement(host_id, seq, {"cpu": cpu}, ts=clock.seconds(), run=run))


def test_duplicates_are_dropped_and_gaps_counted(pipeline, clock):
    for seq in (1, 2, 2, 5):
        feed(pipeline, clock, "h1", seq)
        clock.advance(0.001)  # within the batch delay: nothing dispatched yet
    assert pipeline.stats["duplicates"] == 1 and pipeline.stats["gaps"] == 2
    assert pending_seqs(pipeline, "h1") == [1, 2, 5]
    feed(pipeline, clock, "h1", 1, run="r2")  # a restarted tracker starts again at 1
    assert pipeline.hosts["h1"].last_seq == 1 and pipeline.stats["duplicates"] == 1


def test_invalid_measurement_raises_and_leaves_the_window_untouched(pipeline, clock):
    feed(pipeline, clock, "h1", 1)
    with pytest.raises(InvalidArgument):
        pipeline.on_measure(measurement("h1", 2, {"cpu": float("nan")}, ts=clock.seconds()))
    assert [s["seq"] for s in pipeline.hosts["h1"].window.samples()] == [1]


def test_windows_give_back_what_came_in_and_the_garbage_collector_never_walks_them(pipeline, clock):
    # Minutes of samples of thousands of hosts: as tracked containers a full collection stopped the process ~1 s.
    for seq in (1, 2, 3):
        pipeline.on_measure(measurement("h1", seq, {"cpu": 10.0 * seq, "procs": 300 + seq}, ts=clock.seconds()))
        clock.advance(1)
    gc.collect()
    gc.collect()  # a tuple is untracked once the collector has seen its items untracked
    window = pipeline.hosts["h1"].window
    assert len(window) == 3 and not any(gc.is_tracked(entry) for entry in window.entries)
    assert window.samples(since=clock.seconds() - 2.5) == [{"seq": 2, "ts": clock.seconds() - 2, "metrics": {"cpu": 20.0, "procs": 302}},
                                                          {"seq": 3, "ts": clock.seconds() - 1, "metrics": {"cpu": 30.0, "procs": 303}}]
    clock.advance(pipeline.config.window)
    feed(pipeline, clock, "h1", 4)
    assert [s["seq"] for s in window.samples()] == [4]


def test_due_hosts_are_batched_and_results_published(pipeline, fake, clock):
    for host_id in ("a", "b", "c"):
        feed(pipeline, clock, host_id, 1, cpu=90.0)
    clock.advance(0.1)
    assert [len(hosts_of(call)) for call in fake.calls_made] == [2, 1]
    change = {"metric": "cpu", "previous": "LOW", "level": "HIGH", "ts": clock.seconds(), "seq": 1, "value": 90.0}
    for call in fake.calls_made:
        call.result.callback(analysed(hosts_of(call), "HIGH", [change]))
    assert sorted(p["host_id"] for p in fake.published_on("nerve.analysis.")) == ["a", "b", "c"]
    assert [(a["host_id"], a["previous"], a["level"]) for a in fake.published_on("nerve.alert.")][0] == ("a", "LOW", "HIGH")
    pipeline.publish_digest()
    digest = fake.published_on("nerve.digest")[-1]
    assert digest["fields"] == DIGEST_FIELDS and len(digest["hosts"]["a"]) == len(DIGEST_FIELDS)  # a row per host
    assert digest_entries(digest)["a"]["level"] == "HIGH" and digest_entries(digest)["a"]["cpu"] == 90.0


def test_the_digest_carries_a_host_when_its_sample_or_level_changes_not_when_an_analysis_repeats(pipeline, fake, clock):
    def digest_after(step):
        step()
        pipeline.publish_digest()
        return sorted(digest_entries(fake.published_on("nerve.digest")[-1]))

    def answer(level):
        answer_all(fake, lambda hosts: analysed(hosts, level))

    assert digest_after(lambda: (feed(pipeline, clock, "a", 1), clock.advance(0.1))) == ["a"]
    assert digest_after(lambda: answer("LOW")) == ["a"]  # its first level
    assert digest_after(lambda: None) == []
    assert digest_after(lambda: (feed(pipeline, clock, "a", 2), clock.advance(0.1))) == ["a"]
    assert digest_after(lambda: answer("LOW")) == [], "the same level again is not news"
    assert digest_after(lambda: (feed(pipeline, clock, "a", 3), clock.advance(0.1))) == ["a"]
    assert digest_after(lambda: answer("HIGH")) == ["a"]
    assert digest_entries(fake.published_on("nerve.digest")[-1])["a"]["level"] == "HIGH"


def sizes_of_calls(fake, since=0):
    """Hosts per nerve.analyze call, in the order sent."""
    return [len(hosts_of(call)) for call in fake.calls_made[since:]]


def test_a_backlog_is_spread_over_the_proven_slots_and_a_probe_stays_small(clock):
    orchestrator, fake = on_fake_mesh(clock, batch_size=2, max_batch_size=5, max_in_flight=3)
    orchestrator.active = True
    for host_id in ("a", "b", "c"):
        feed(orchestrator, clock, host_id, 1)
    clock.advance(0.1)
    assert sizes_of_calls(fake) == [2, 1], "within what the slots take at batch_size, batches stay small"
    for call in list(fake.calls_made):
        call.result.callback(analysed(hosts_of(call)))
    assert orchestrator.proven_slots == 2
    # 12 hosts due, 3 slots of which 2 proven: 2 + 2 would leave 8 waiting a whole round trip; the proven
    # slots take up to max_batch_size each, the unproven third slot only batch_size.
    for index in range(12):
        feed(orchestrator, clock, f"h{index}", 1)
    clock.advance(0.1)
    assert sizes_of_calls(fake, 2) == [5, 5, 2]
    # The probe is refused: it cost 2 hosts' serialisation, and they go back to wait for a slot.
    fake.calls_made[-1].result.errback(ApplicationError("crossbar.error.max_concurrency_reached", "busy"))
    assert orchestrator.capacity == 2.0 and orchestrator.proven_slots == 2
    assert sum(1 for host in orchestrator.hosts.values() if host.pending and not host.in_flight) == 2


def test_a_call_stays_under_the_router_message_limit_whatever_the_backlog(clock):
    # After an analyzer outage every host holds many samples; one call of them all would exceed the router's
    # max_message_size, and Autobahn would refuse to send it at all.
    orchestrator, fake = on_fake_mesh(clock, batch_size=2, max_batch_size=5000, max_pending=600, max_in_flight=1)
    metrics = dict({f"cpu_core.{core}": 1.0 for core in range(300)}, cpu=1.0)
    for seq in range(1, 41):
        for index in range(40):
            orchestrator.on_measure(measurement(f"h{index}", seq, metrics, ts=clock.seconds()))
        clock.advance(0.001)
    orchestrator.active, sizes = True, []
    while orchestrator.due:
        sent = len(fake.calls_made)
        orchestrator.dispatch()
        calls = fake.calls_made[sent:]
        assert calls, "due hosts but nothing sent"
        for call in calls:
            sizes.append(len(msgpack.packb(hosts_of(call))))
            call.result.callback(analysed(hosts_of(call)))
    assert sum(orchestrator.stats[key] for key in ("gaps", "coalesced")) == 0
    assert len(sizes) > 1 and max(sizes) < MAX_CALL_BYTES, sizes


def test_the_call_limit_is_below_every_router_message_limit():
    config = json.loads((Path(__file__).parent.parent / ".crossbar" / "config.json").read_text())
    limits = [int(value) for value in re.findall(r'"max_message_size": (\d+)', json.dumps(config))]
    assert limits and MAX_CALL_BYTES < min(limits)


def test_max_batch_size_below_the_batch_size_is_refused():
    with pytest.raises(ConfigError, match="max batch size must be >= the batch size"):
        OrchestratorConfig(mesh=MeshConfig(role="orchestrator"), batch_size=100, max_batch_size=50)


def test_backpressure_restores_work_and_loses_no_sample(pipeline, fake, clock):
    feed(pipeline, clock, "h1", 1)
    clock.advance(0.1)
    first = fake.calls_made[0].result
    feed(pipeline, clock, "h1", 2)  # arrives while the call is in flight
    first.errback(ApplicationError("crossbar.error.max_concurrency_reached", "busy"))
    assert pipeline.stats["backpressure"] == 1
    assert pending_seqs(pipeline, "h1") == [1, 2]
    clock.advance(0.01)
    assert len(fake.calls_made) == 1, "retried before the backoff elapsed"
    clock.advance(1.0)
    second = fake.calls_made[1]
    assert [s["seq"] for s in hosts_of(second)[0]["samples"]] == [1, 2]
    second.result.callback(analysed(hosts_of(second)))
    assert fake.published_on("nerve.analysis.h1")[-1]["seq"] == 2


def test_work_held_through_an_analyzer_outage_is_the_windows_rows_and_untracked_by_the_collector(pipeline, clock):
    # Ten minutes of pending samples at 4,000 hosts were ~2.4 GB of dicts the collector walked; now a list slot each.
    pipeline.mesh.connected = False
    for seq in range(1, 6):
        feed(pipeline, clock, "h1", seq, cpu=float(seq))
        clock.advance(1)
    host = pipeline.hosts["h1"]
    assert all(row is entry for row, entry in zip(host.pending, host.window.entries))
    gc.collect()
    assert not any(gc.is_tracked(row) for row in host.pending)
    assert [as_sample(row)["metrics"] for row in host.pending] == [{"cpu": float(seq)} for seq in range(1, 6)]


def test_pending_work_per_host_is_bounded_newest_wins(pipeline, clock):
    pipeline.mesh.connected = False  # nothing can be sent: work piles up on the host
    for seq in range(1, 9):
        feed(pipeline, clock, "h1", seq)
        clock.advance(1)
    assert pending_seqs(pipeline, "h1") == [4, 5, 6, 7, 8]
    assert pipeline.stats["coalesced"] == 3


def test_callee_lost_mid_call_is_retried(pipeline, fake, clock):
    feed(pipeline, clock, "h1", 1)
    clock.advance(0.1)
    fake.calls_made[0].result.errback(ApplicationError("wamp.error.canceled", "callee disconnected"))
    clock.advance(0.1)
    assert len(fake.calls_made) == 2 and pipeline.stats["retries"] == 1


def test_a_call_an_analyzer_does_not_answer_in_time_is_sent_again(pipeline, fake, clock):
    # Two analyzers answered in 20 ms: a third call gets MIN_CALL_DEADLINE, not the 30 s call timeout.
    for seq in (1, 2):
        feed(pipeline, clock, "h1", seq)
        clock.advance(0.1)
        clock.advance(0.02)
        fake.calls_made[-1].result.callback(analysed(hosts_of(fake.calls_made[-1])))
    feed(pipeline, clock, "h1", 3)
    clock.advance(0.1)
    stuck = fake.calls_made[-1]
    assert stuck.timeout == pytest.approx(1.0)
    fake.advance(stuck.timeout)  # a stopped analyzer never answers: the Mesh cancels the call
    clock.advance(0.1)
    again = fake.calls_made[-1]
    assert again is not stuck and [s["seq"] for s in hosts_of(again)[0]["samples"]] == [3]
    assert pipeline.stats["deadlines_missed"] == 1
    assert again.timeout == pytest.approx(2.0)  # doubled while calls run out in a row, so slow analyzers still finish
    again.result.callback(analysed(hosts_of(again)))
    assert pipeline.call_deadline() == pytest.approx(1.0)


def test_the_call_deadline_follows_the_slowest_recent_call_up_to_the_call_timeout(clock):
    pipeline, _ = on_fake_mesh(clock, call_timeout=5.0)
    pipeline.call_times.extend([0.01, 0.3, 0.02])
    assert pipeline.call_deadline() == pytest.approx(1.2)
    pipeline.call_times.append(1.5)
    assert pipeline.call_deadline() == 5.0


def test_history_and_snapshot(pipeline, clock):
    feed(pipeline, clock, "h1", 1)
    clock.advance(1)
    feed(pipeline, clock, "h1", 2)
    assert [s["seq"] for s in pipeline.history("h1")["samples"]] == [1, 2]
    assert [s["seq"] for s in pipeline.history("h1", since=clock.seconds() - 0.5)["samples"]] == [2]
    with pytest.raises(NotFound, match="nope"):
        pipeline.history("nope")
    with pytest.raises(InvalidArgument, match="host_id"):
        pipeline.history(42)
    snapshot = pipeline.snapshot()
    assert snapshot["hosts"]["h1"]["seq"] == 2 and snapshot["schema"]["measure"]["mem"]["unit"] == "%"
    clock.advance(60)
    assert pipeline.snapshot()["hosts"]["h1"]["stale"] is True


def test_snapshot_carries_recent_values_for_sparklines_only_when_asked(pipeline, clock):
    for seq, cpu in enumerate((5.0, 6.0, 7.0, 8.0), start=1):
        feed(pipeline, clock, "h1", seq, cpu=cpu)
        clock.advance(1)
    pipeline.on_measure(measurement("h1", 5, {"mem": 40.0}, ts=clock.seconds(), run="r1"))  # no cpu in this one
    assert "recent" not in pipeline.snapshot()["hosts"]["h1"]
    assert pipeline.snapshot(recent=3)["hosts"]["h1"]["recent"] == [7.0, 8.0]
    assert pipeline.snapshot(recent=60)["hosts"]["h1"]["recent"] == [5.0, 6.0, 7.0, 8.0]
    assert pipeline.snapshot(recent=60, metric="mem")["hosts"]["h1"]["recent"] == [40.0]
    for bad in (-1, 601, 2.5, True, "60"):
        with pytest.raises(InvalidArgument, match="recent must be a whole number of samples from 0 to 600"):
            pipeline.snapshot(recent=bad)
    with pytest.raises(InvalidArgument, match="metric must be a metric of the measurement schema"):
        pipeline.snapshot(recent=5, metric="nope")


def test_a_table_snapshot_holds_the_same_entries_in_40_percent_less_json(pipeline, clock):
    for index in range(200):
        event = measurement(f"sim-{index:04d}", 1, {"cpu": 100 / 7 + index / 3, "mem": 200 / 7}, ts=clock.seconds())
        pipeline.on_measure(dict(event, hostname="3f2a9c1b7d4e"))
    entries, table = pipeline.snapshot(recent=5), pipeline.snapshot(recent=5, table=True)
    assert table["fields"][:4] == ["level", "ts", "seq", "stale"] and table["fields"][-2:] == ["hostname", "recent"]
    assert {host_id: dict(zip(table["fields"], row)) for host_id, row in table["hosts"].items()} == entries["hosts"]
    assert list(pipeline.snapshot(table=True)["fields"]) == [*DIGEST_FIELDS, "hostname"]
    assert entries["hosts"]["sim-0000"]["cpu"] == 14.29  # 100 / 7 to four significant digits
    hosts = pipeline.snapshot(table=True)
    assert len(json.dumps([hosts["fields"], hosts["hosts"]])) < 0.6 * len(json.dumps(pipeline.snapshot()["hosts"]))
    with pytest.raises(InvalidArgument, match="table must be true"):
        pipeline.snapshot(table="yes")


def test_hosts_already_down_or_offline_when_it_joins_come_from_the_keeper(pipeline, fake, clock):
    # A DOWN or OFFLINE host sends nothing: without the keeper's word a restarted orchestrator would not list it.
    feed(pipeline, clock, "back-again", 1)  # reported since the join: up, whatever the keeper said
    down = {"metric": "host", "level": "DOWN", "hostname": "db-07.example"}
    fake.answer("nerve.alerts.open", lambda: {"alerts": [
        dict(down, host_id="gone-01"), dict(down, host_id="back-again"), dict(down, host_id="Not A Host"),
        {"host_id": "hot-01", "metric": "cpu", "level": "HIGH"}, "garbage"], "silences": [],
        "offline": ["left-01", "back-again", "Not A Host", 7]})
    pipeline.load_presence()
    hosts = pipeline.snapshot()["hosts"]
    assert sorted(hosts) == ["back-again", "gone-01", "left-01"]
    assert hosts["gone-01"] == dict(hosts["gone-01"], level="DOWN", ts=None, stale=True, hostname="db-07.example")
    assert hosts["left-01"] == dict(hosts["left-01"], level="OFFLINE", ts=None, stale=True, hostname="left-01")
    assert hosts["back-again"]["level"] not in ("DOWN", "OFFLINE")
    pipeline.follow_host_presence({"host_id": "gone-01", "metric": "host", "level": "UP"})  # the keeper says it is back
    assert pipeline.snapshot()["hosts"]["gone-01"]["level"] is None
    fake.answer("nerve.alerts.open", lambda: defer.fail(ApplicationError("wamp.error.no_such_procedure")))
    pipeline.load_presence()  # no keeper: nothing is DOWN, nothing logged


def test_a_host_silent_for_down_after_is_reported_once_and_again_when_heard(pipeline, fake, clock):
    feed(pipeline, clock, "quiet-01", 1)
    feed(pipeline, clock, "busy-01", 1)
    clock.advance(29)
    feed(pipeline, clock, "busy-01", 2)
    pipeline.publish_digest()
    assert fake.published_on("nerve.orchestrator.silence") == [], "stale after 5 s, silent only after 30 s"
    clock.advance(2)
    pipeline.publish_digest()
    pipeline.publish_digest()
    [silence] = fake.published_on("nerve.orchestrator.silence")
    assert (silence["silent"], silence["heard"]) == (["quiet-01"], []), "once, not on every tick"
    assert pipeline.silent_hosts()["silent"] == ["quiet-01"], "a keeper starting now learns it"
    feed(pipeline, clock, "quiet-01", 2)
    pipeline.publish_digest()
    assert pipeline.silent_hosts()["silent"] == []
    assert [(event["silent"], event["heard"]) for event in fake.published_on("nerve.orchestrator.silence")] == [
        (["quiet-01"], []), ([], ["quiet-01"])]
    # A standby flags silent hosts without a word; after its takeover it reports only what changes.
    pipeline.active = False
    clock.advance(31)
    pipeline.publish_digest()
    pipeline.active = True
    pipeline.publish_digest()
    assert len(fake.published_on("nerve.orchestrator.silence")) == 2, "the active one had said so already"
    feed(pipeline, clock, "quiet-01", 3)
    pipeline.publish_digest()
    assert fake.published_on("nerve.orchestrator.silence")[-1]["heard"] == ["quiet-01"]
    # Back from a router restart it heard nothing for a minute: no host is silent before a full down_after more.
    clock.advance(60)
    pipeline.restart_silence_clock()
    clock.advance(29)
    pipeline.publish_digest()
    assert len(fake.published_on("nerve.orchestrator.silence")) == 3
    clock.advance(2)
    pipeline.publish_digest()
    # busy-01 went silent while this one was a standby (the active one said so then): only quiet-01 is news.
    assert fake.published_on("nerve.orchestrator.silence")[-1]["silent"] == ["quiet-01"]
    with pytest.raises(ConfigError, match="down after must be 5.0"):
        OrchestratorConfig(mesh=MeshConfig(role="orchestrator"), down_after=2.0)


def test_a_standby_neither_calls_nor_publishes_and_drops_work_the_active_one_did(pipeline, fake, clock):
    pipeline.active = False
    for seq in (1, 2, 3):
        feed(pipeline, clock, "h1", seq)
        clock.advance(1)
    pipeline.publish_digest()
    assert fake.calls_made == [] and fake.published == []
    done = pipeline.hosts["h1"].window.samples()[1]
    pipeline.follow_analysed({"hosts": {"h1": [2, done["ts"], "LOW"], "unknown": [1, 1.0, "HIGH"]}})
    assert pending_seqs(pipeline, "h1") == [3]
    assert pipeline.snapshot()["hosts"]["h1"]["level"] == "LOW"


@pytest.mark.parametrize("hosts", [[], b"\xc1 is no MessagePack", pack_batch({"h1": {}}), pack_batch([]), {"h1": {}}])
def test_a_malformed_analyzer_answer_puts_the_samples_back(pipeline, fake, clock, hosts):
    feed(pipeline, clock, "h1", 1)
    clock.advance(0.1)
    fake.calls_made[0].result.callback({"analyzer": "broken", "hosts": hosts})
    assert pipeline.stats["retries"] == 1
    assert pending_seqs(pipeline, "h1") == [1]
    assert pipeline.in_flight_calls == 0 and not pipeline.hosts["h1"].in_flight


def test_the_due_set_follows_every_change_of_pending_work_and_calls_in_flight(pipeline, fake, clock):
    def assert_due(*expected):
        truth = [h.host_id for h in pipeline.hosts.values() if h.pending and not h.in_flight]
        assert sorted(pipeline.due) == sorted(truth) == sorted(expected)

    feed(pipeline, clock, "a", 1)
    feed(pipeline, clock, "b", 1)
    assert_due("a", "b")
    clock.advance(0.1)  # dispatch: both in flight
    assert_due()
    feed(pipeline, clock, "a", 2)  # a newer sample waits behind the call
    assert_due()
    first = fake.calls_made[0]
    first.result.callback(analysed(hosts_of(first)))
    assert_due("a")
    clock.advance(0.1)
    fake.calls_made[1].result.errback(ApplicationError("wamp.error.canceled", "callee disconnected"))
    assert_due("a")  # the failed call's samples are back
    pipeline.active = False  # a standby drops what the active orchestrator analysed
    pipeline.follow_analysed({"hosts": {"a": [2, pipeline.hosts["a"].pending[-1][1], "LOW"]}})
    assert_due()


def answer_all(fake, respond=analysed):
    """Answer every call still waiting with respond(its hosts)."""
    for call in fake.calls_made:
        if not call.result.called:
            call.result.callback(respond(hosts_of(call)))


def test_analysis_events_go_only_to_hosts_someone_watches(pipeline, fake, clock):
    interest = pipeline.interest
    interest.loaded = True
    interest.add({"id": 7, "uri": "nerve.analysis.a", "match": "exact"})
    interest.add({"id": 6, "uri": "nerve.orchestrator.analysed", "match": "exact"})  # a standby
    for host_id in ("a", "b", "c"):
        feed(pipeline, clock, host_id, 1)
    clock.advance(0.1)
    answer_all(fake)
    assert [p["host_id"] for p in fake.published_on("nerve.analysis.")] == ["a"]
    assert pipeline.stats["analysis_unwatched"] == 2
    # the standbys' progress event covers every host, watched or not, in one event per call
    assert sorted(h for p in fake.published_on("nerve.orchestrator.analysed") for h in p["hosts"]) == ["a", "b", "c"]
    interest.add({"id": 8, "uri": "nerve.", "match": "prefix"})  # e.g. `nerve listen nerve.`
    interest.remove(7)
    for host_id in ("a", "b", "c"):
        feed(pipeline, clock, host_id, 2)
    clock.advance(0.1)
    answer_all(fake)
    assert sorted(p["host_id"] for p in fake.published_on("nerve.analysis.") if p["seq"] == 2) == ["a", "b", "c"]
    assert pipeline.get_stats()["watched_hosts"] == 3
    interest.remove(8)
    assert not interest.wants("nerve.analysis.a") and pipeline.get_stats()["watched_hosts"] == 0
    # Without a standby (or another follower) the progress event goes to nobody, so it is not sent.
    interest.remove(6)
    sent = len(fake.published_on("nerve.orchestrator.analysed"))
    feed(pipeline, clock, "a", 3)
    clock.advance(0.1)
    answer_all(fake)
    assert len(fake.published_on("nerve.orchestrator.analysed")) == sent and pipeline.stats["analysed"] == 7


def test_every_analysis_event_is_published_before_subscriptions_are_known_or_when_configured(clock):
    orchestrator, fake = on_fake_mesh(clock, analysis_events="all")
    orchestrator.active = True
    orchestrator.interest.loaded = True
    feed(orchestrator, clock, "a", 1)
    clock.advance(0.1)
    answer_all(fake)
    assert [p["host_id"] for p in fake.published_on("nerve.analysis.")] == ["a"]
    assert TopicInterest("nerve.analysis.").wants("nerve.analysis.x")  # not loaded yet: err on delivering


@pytest.mark.parametrize("pattern, topic, expected", [
    ("nerve..a", "nerve.analysis.a", True), ("nerve..a", "nerve.analysis.b", False),
    ("nerve.analysis.", "nerve.analysis.a", True), ("nerve.", "nerve.analysis.a", False), ("..", "x.y.z", True)])
def test_wildcard_subscriptions_match_like_the_router(pattern, topic, expected):
    interest = TopicInterest("nerve.analysis.")
    interest.loaded = True
    interest.add({"id": 1, "uri": pattern, "match": "wildcard"})
    assert wildcard_matches(pattern, topic) is expected
    assert interest.wants(topic) is expected


def test_the_digest_carries_only_what_changed_and_is_sent_every_tick(pipeline, fake, clock):
    for host_id in ("a", "b"):
        feed(pipeline, clock, host_id, 1)
    pipeline.publish_digest()
    assert sorted(digest_entries(fake.published_on("nerve.digest")[-1])) == ["a", "b"]
    pipeline.publish_digest()
    assert digest_entries(fake.published_on("nerve.digest")[-1]) == {}  # nothing new: an empty keep-alive, not everything again
    clock.advance(0.5)
    feed(pipeline, clock, "b", 2)
    pipeline.publish_digest()
    assert list(digest_entries(fake.published_on("nerve.digest")[-1])) == ["b"]
    clock.advance(0.1)
    answer_all(fake, lambda hosts: analysed(hosts, "HIGH"))
    pipeline.publish_digest()
    assert {h: e["level"] for h, e in digest_entries(fake.published_on("nerve.digest")[-1]).items()} == {"a": "HIGH", "b": "HIGH"}
    clock.advance(60)  # both go quiet: the flip to stale is news
    pipeline.publish_digest()
    assert {h: e["stale"] for h, e in digest_entries(fake.published_on("nerve.digest")[-1]).items()} == {"a": True, "b": True}


def test_a_packed_batch_travels_as_one_binary_value_and_gives_the_analysis_lists_give(clock):
    # The router then decodes one value per call instead of every field of every host.
    analyzer_config = AnalyzerConfig(mesh=MeshConfig(role="analyzer", authid="analyzer-t"))
    analyzer = Analyzer(analyzer_config, SimpleNamespace(config=analyzer_config))
    events, wires = {}, {}
    for wire in ("compact", "packed"):
        orchestrator, fake = on_fake_mesh(clock, analysis_wire=wire)
        orchestrator.active, orchestrator.interest.loaded = True, False  # publish every analysis
        for seq, cpu in enumerate((10.0, 90.0, 95.0, 97.0)):
            for host_id in ("a", "b"):
                feed(orchestrator, clock, host_id, seq, cpu=cpu)
            clock.advance(0.1)
            for call in fake.calls_made:
                if not call.result.called:
                    call.result.callback(analyzer._analyze(call.args[0], call.kwargs["compact"]))
            clock.advance(0.9)
        events[wire] = [{k: v for k, v in e.items() if k not in ("ts", "analyzed_at")}
                        for e in fake.published_on("nerve.analysis.")]
        wires[wire] = {(type(call.args[0]).__name__, call.kwargs["compact"]) for call in fake.calls_made}
    assert wires == {"compact": {("list", True)}, "packed": {("bytes", True)}}
    assert len(events["packed"]) == 8 and events["packed"] == events["compact"]
    assert events["packed"][-1]["metrics"]["cpu"]["level"] == "HIGH"


def test_stats_count_every_measurement_to_analysis_latency_in_buckets_a_reader_can_difference(pipeline, fake, clock):
    # The percentiles cover the last 10,000 results (~2 s at 4,000 hosts); the histogram covers all of them.
    for seq, delay in enumerate((0.02, 0.12, 0.12, 0.6, 12.0), start=1):
        feed(pipeline, clock, f"h{seq}", 1)
        clock.advance(delay)
        call = fake.calls_made[-1]
        call.result.callback(analysed(hosts_of(call)))
    histogram = pipeline.get_stats()["analysis_latency_histogram"]
    counted = dict(zip(histogram["edges_ms"] + ["over"], histogram["counts"]))
    assert {edge: count for edge, count in counted.items() if count} == {25: 1, 150: 2, 750: 1, "over": 1}


def test_an_analyzer_that_refuses_packed_calls_gets_compact_ones_until_packed_is_tried_again(pipeline, fake, clock):
    # An analyzer from before packed calls says hosts must be a list: the work goes back and the mesh keeps analysing.
    feed(pipeline, clock, "h1", 1)
    clock.advance(0.1)
    [packed] = fake.calls_made
    assert isinstance(packed.args[0], bytes)
    packed.result.errback(ApplicationError("nerve.error.invalid_argument", "hosts: expected a list, got bytes"))
    assert pipeline.stats["packed_refused"] == 1 and pending_seqs(pipeline, "h1") == [1]
    clock.advance(0.1)
    compact = fake.calls_made[1]
    args, options = compact.args, compact.kwargs
    assert options["compact"] is True and isinstance(args[0], list)
    assert args[0][0]["samples"] == [{"seq": 1, "ts": args[0][0]["samples"][0]["ts"], "metrics": {"cpu": 10.0}}]
    compact.result.callback(analysed(args[0]))
    assert fake.published_on("nerve.orchestrator.analysed")[-1]["hosts"]["h1"][0] == 1
    clock.advance(PACKED_REFUSED_SECONDS)
    feed(pipeline, clock, "h1", 2)
    clock.advance(0.1)
    assert isinstance(fake.calls_made[2].args[0], bytes), "packed is tried again once the fallback has run its time"


def test_a_refused_compact_call_is_retried_as_it_was(clock):
    compact, fake = on_fake_mesh(clock, analysis_wire="compact")
    compact.active = True
    feed(compact, clock, "h1", 1)
    clock.advance(0.1)
    fake.calls_made[0].result.errback(ApplicationError("nerve.error.invalid_argument", "something else"))
    clock.advance(0.1)
    assert compact.stats["packed_refused"] == 0 and compact.wire() == "compact" and len(fake.calls_made) == 2


def test_compact_analyzer_answers_become_the_same_analysis_events_as_full_ones(pipeline, fake, clock):
    def real_analyzer(compact):
        return lambda hosts: {"analyzer": "x", "hosts": analyze_batch(hosts, compact=compact)}

    pipeline.interest.loaded = False  # publish everything
    events = []
    for compact in (False, True):
        fake.published.clear()
        for seq, cpu in enumerate((10.0, 90.0, 95.0, 97.0)):
            feed(pipeline, clock, f"h-{compact:d}", seq, cpu=cpu)
            clock.advance(0.1)
            answer_all(fake, real_analyzer(compact))
            clock.advance(0.9)
        events.append(fake.published_on("nerve.analysis."))
    assert [len(e) for e in events] == [4, 4]
    strip = lambda e: {k: v for k, v in e.items() if k not in ("host_id", "hostname", "ts", "analyzed_at")}  # noqa: E731
    assert [strip(e) for e in events[0]] == [strip(e) for e in events[1]]
    assert events[1][-1]["metrics"]["cpu"]["level"] == "HIGH"
    assert pipeline.history("h-1")["analysis"]["metrics"] == events[1][-1]["metrics"]
    assert pipeline.get_stats()["analysis_latency"]["samples"] == 8


def test_gc_pauses_time_every_collection():
    from components.mesh.collector import collection_stats, time_collections

    time_collections()
    time_collections()  # idempotent: one callback, so each collection is counted once
    before = collection_stats()
    gc.collect()
    after = collection_stats()
    assert after["count"] == before["count"] + 1
    assert 0 < after["max_seconds"] <= after["seconds"] and after["seconds"] > before["seconds"]
