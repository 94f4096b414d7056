"""Measurement validation and the tracker's readings."""

import math
import time

import pytest
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer

from components.mesh.errors import InvalidArgument
from components.monitor.measure import MEASURE_SCHEMA, family_of, validate_measure
from components.testing.live import measurement
from components.monitor.tracker import SimulatedHosts, SystemSampler, mount_name

NOW = 1_800_000_000.0


def good(**changes):
    event = measurement("web-01", 5, {"cpu": 12.5, "mem": 40.0, "disk_used.root": 50.0}, ts=NOW)
    event.update(changes)
    return event


@pytest.mark.parametrize("changes, fragment", [
    ({"host_id": "Web 01"}, "host_id"),
    ({"host_id": 7}, "host_id"),
    ({"seq": "5"}, "seq"),
    ({"seq": -1}, "seq"),
    ({"seq": True}, "seq"),
    ({"ts": NOW + 3600}, "ts"),
    ({"ts": NOW - 10 * 86400}, "ts"),
    ({"ts": float("nan")}, "ts"),
    ({"interval": 0}, "interval"),
    ({"interval": 0.05}, "interval"),
    ({"interval": 1e9}, "interval"),
    ({"seq": 2**64 - 1}, "seq"),
    ({"seq": 2**53 + 1}, "seq"),
    ({"metrics": {}}, "metrics"),
    ({"metrics": {"cpu": float("inf")}}, "cpu"),
    ({"metrics": {"cpu": "high"}}, "cpu"),
    ({"metrics": {"cpu": 250.0}}, "cpu"),
    ({"metrics": {"net_recv": -5.0}}, "net_recv"),
    ({"metrics": {"gpu": 5.0}}, "gpu"),
    ({"metrics": {f"cpu_core.{i}": 1.0 for i in range(600)}}, "metrics"),
])
def test_bad_measurements_are_rejected_naming_the_field(changes, fragment):
    with pytest.raises(InvalidArgument, match=fragment):
        validate_measure(good(**changes), now=NOW)


def test_missing_field_is_named():
    event = good()
    del event["seq"]
    with pytest.raises(InvalidArgument, match="lacks field 'seq'"):
        validate_measure(event, now=NOW)


def test_topic_must_match_host_id():
    with pytest.raises(InvalidArgument, match="arrived on topic"):
        validate_measure(good(), now=NOW, topic="nerve.measure.other")
    assert validate_measure(good(), now=NOW, topic="nerve.measure.web-01")["seq"] == 5


def test_real_machine_sample_fits_the_schema():
    sampler = SystemSampler()
    time.sleep(0.1)
    metrics = sampler.sample()
    assert {"cpu", "load1", "load5", "load15", "mem", "swap", "disk_read", "disk_write", "net_recv", "net_sent", "procs"} <= set(metrics)
    assert any(name.startswith("cpu_core.") for name in metrics) and any(name.startswith("disk_used.") for name in metrics)
    validate_measure(measurement("me", 1, metrics, ts=time.time()), now=time.time())


def test_simulated_hosts_are_plausible_and_valid():
    hosts = SimulatedHosts(200, seed=1)
    now = time.time()
    for second in range(30):
        for metrics, host_id in zip(hosts.sample_many(slice(0, None), now + second), hosts.host_ids):
            validate_measure(measurement(host_id, 1, metrics, ts=now), now=now)
            assert all(math.isfinite(value) for value in metrics.values())
    assert hosts.host_ids[0] == "sim-0000"
    assert isinstance(hosts.sample(7, now)["procs"], int)  # counts stay integers on the wire
    assert (hosts.burst_until > now).any()  # some hosts burst, as real machines do


def test_every_family_declares_label_and_unit():
    assert all({"label", "unit", "min"} <= set(spec) for spec in MEASURE_SCHEMA.values())
    assert family_of("disk_used.var_lib") == "disk_used" and mount_name("/var/lib") == "var_lib" and mount_name("/") == "root"


def test_simulated_hosts_spread_over_the_interval_each_once_per_round():
    from components.mesh.config import MeshConfig
    from components.monitor.tracker import SPREAD_SLOTS, Tracker, TrackerConfig

    config = TrackerConfig(mesh=MeshConfig(role="simulator"), hosts=50)
    tracker = Tracker(config, mesh=None)
    assert config.slots == SPREAD_SLOTS
    rounds = [tracker.measurements(1000.0 + slot * 0.05, slot) for slot in range(config.slots)]
    assert max(map(len, rounds)) - min(map(len, rounds)) <= 1  # groups of equal size
    measured = [event["host_id"] for group in rounds for event in group]
    assert sorted(measured) == sorted(tracker.host_ids)  # each host once
    assert {event["seq"] for group in rounds for event in group} == {1}
    assert len({group[0]["ts"] for group in rounds}) == config.slots  # at their own phase, not in one burst
    assert tracker.measurements(1001.0, 0)[0]["seq"] == 2
    aligned = TrackerConfig(mesh=MeshConfig(role="simulator"), hosts=50, aligned=True)
    assert aligned.slots == 1 and len(Tracker(aligned, mesh=None).measurements(1000.0)) == 50
    assert TrackerConfig(mesh=MeshConfig(role="tracker")).slots == 1


class AcknowledgingMesh:
    """A mesh that records publishes and holds each requested acknowledgement until the test fires it."""

    connected = True

    def __init__(self):
        self.published = []  # (event, Deferred or None)

    def publish(self, topic, event, acknowledge=False, retain=False):
        """Record the event; a Deferred the test fires when acknowledge=True."""
        assert topic == f"nerve.measure.{event['host_id']}"
        self.published.append((event, defer.Deferred() if acknowledge else None))
        return self.published[-1][1]

    def call(self, uri, *args):
        """Whatever the tracker asks (a measurement subscription and its subscribers): one."""
        return defer.succeed(1)

    def asked(self):
        """Indexes of the publishes that asked for an acknowledgement."""
        return [index for index, (_, acknowledgement) in enumerate(self.published) if acknowledgement]


def listening_tracker(**settings):
    from components.mesh.config import MeshConfig
    from components.monitor.tracker import Tracker, TrackerConfig

    mesh = AcknowledgingMesh()
    tracker = Tracker(TrackerConfig(mesh=MeshConfig(role="simulator"), **settings), mesh)
    tracker.listened = True
    return tracker, mesh


def test_one_acknowledgement_confirms_every_publish_before_it():
    tracker, mesh = listening_tracker(hosts=500, aligned=True)
    tracker.measure_round()
    assert len(mesh.published) == 500 and mesh.asked() == [0, 200, 400]  # 3 PUBLISHED from the router, not 500
    mesh.published[200][1].callback(None)
    assert tracker.stats["published"] == 201 and len(tracker.unacked) == 299
    assert next(iter(tracker.unacked)) == (mesh.published[201][0]["host_id"], 1)
    mesh.published[0][1].callback(None)  # a confirmation already covered changes nothing
    assert tracker.stats["published"] == 201 and len(tracker.unacked) == 299


def test_a_tracker_of_one_host_asks_for_an_acknowledgement_every_5_seconds_of_measurements():
    tracker, mesh = listening_tracker(host_id="web-01")
    for second in range(12):
        tracker.buffer.extend(tracker.measurements(NOW + second))
        tracker.flush()
    assert [mesh.published[index][0]["ts"] - NOW for index in mesh.asked()] == [0, 5, 10]


def test_a_refused_window_is_counted_and_not_retried():
    tracker, mesh = listening_tracker(hosts=500, aligned=True)
    tracker.measure_round()
    mesh.published[200][1].errback(ApplicationError("wamp.error.not_authorized", "no"))
    assert tracker.stats["refused"] == 201 and tracker.stats["published"] == 0 and len(tracker.unacked) == 299
    assert not tracker.buffer


def test_a_rejoin_replays_every_unconfirmed_publish_in_order():
    tracker, mesh = listening_tracker(hosts=500, aligned=True)
    tracker.measure_round()
    mesh.published[200][1].callback(None)
    mesh.published[400][1].errback(ApplicationError("wamp.close.transport_lost", "gone"))  # the router went away
    sent = len(mesh.published)
    tracker.replay_when_heard()
    replayed = [event for event, _ in mesh.published[sent:]]
    assert replayed == [event for event, _ in mesh.published[201:500]]
    assert mesh.asked()[-2:] == [sent, sent + 200]  # a new session's first publish asks at once
