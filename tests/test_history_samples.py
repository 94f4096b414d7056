"""nerve.samples: the orchestrator hands every measurement over once a second, batched, and pages its window on request."""

import pytest

from components.mesh.config import MeshConfig
from components.mesh.errors import ConfigError, InvalidArgument
from components.monitor.analysis import analyze_batch
from components.monitor.orchestrator import Orchestrator, OrchestratorConfig
from components.monitor.samples import SAMPLES_CHUNK_HOSTS, SAMPLES_SCHEMA, analysis_summary, samples_page
from components.testing import FakeMesh
from components.testing.live import measurement
from tests.test_orchestrator import clock  # noqa: F401  (the fake clock fixture)


def active_orchestrator(clock, **settings):
    config = OrchestratorConfig(mesh=MeshConfig(role="orchestrator", authid="orchestrator-t"), **settings)
    fake = FakeMesh(config)
    orchestrator = Orchestrator(config, fake.mesh, clock=clock.seconds, scheduler=clock)
    orchestrator.active = True
    return orchestrator, fake


def test_every_measurement_of_the_second_goes_out_in_one_event_aligned_by_seq(clock):
    orchestrator, fake = active_orchestrator(clock)
    now = clock.seconds()
    orchestrator.on_measure(measurement("web-01", 1, {"cpu": 10.0, "mem": 50.0}, ts=now - 0.9))
    orchestrator.on_measure(measurement("web-01", 2, {"cpu": 20.0}, ts=now - 0.4))
    orchestrator.on_measure(measurement("db-01", 7, {"cpu": 5.0}, ts=now - 0.5))
    orchestrator.on_measure(measurement("db-01", 7, {"cpu": 5.0}, ts=now - 0.5))  # a duplicate is not handed over
    orchestrator.publish_samples()
    [event] = fake.published_on("nerve.samples")
    assert event["orchestrator"] == "orchestrator-t" and (event["chunk"], event["chunks"]) == (0, 1)
    web = event["hosts"]["web-01"]
    assert web["seq"] == [1, 2] and web["ts"] == [now - 0.9, now - 0.4] and web["run"] == "test-run"
    assert web["metrics"] == {"cpu": [10.0, 20.0], "mem": [50.0, None]}
    assert event["hosts"]["db-01"]["seq"] == [7]
    assert set(web) == set(SAMPLES_SCHEMA["hosts"]["entry"]) and set(event) == set(SAMPLES_SCHEMA)
    orchestrator.publish_samples()  # nothing new: nothing published
    assert len(fake.published_on("nerve.samples")) == 1


def test_large_fleets_are_chunked_and_a_standby_or_a_zero_period_publishes_nothing(clock):
    orchestrator, fake = active_orchestrator(clock)
    for index in range(SAMPLES_CHUNK_HOSTS + 5):
        orchestrator.on_measure(measurement(f"h-{index:05d}", 1, {"cpu": 1.0}, ts=clock.seconds()))
    orchestrator.publish_samples()
    assert len(fake.published_on("nerve.samples")) == 1  # the next chunk waits for the reactor's next turn
    clock.advance(0)
    events = fake.published_on("nerve.samples")
    assert [(event["chunk"], event["chunks"], len(event["hosts"])) for event in events] == \
        [(0, 2, SAMPLES_CHUNK_HOSTS), (1, 2, 5)]
    orchestrator.active = False
    orchestrator.on_measure(measurement("h-00000", 2, {"cpu": 1.0}, ts=clock.seconds()))
    orchestrator.publish_samples()
    assert len(fake.published_on("nerve.samples")) == 2 and orchestrator.samples_received == {}
    off, _ = active_orchestrator(clock, samples_every=0)
    off.on_measure(measurement("h-1", 1, {"cpu": 1.0}, ts=clock.seconds()))
    assert off.samples_received == {}
    with pytest.raises(ConfigError, match="samples every"):
        OrchestratorConfig(mesh=MeshConfig(role="orchestrator"), samples_every=-1)


def test_nothing_is_built_while_nobody_subscribes_and_a_subscriber_gets_the_next_second(clock):
    orchestrator, fake = active_orchestrator(clock)
    orchestrator.interest.loaded = True  # the router says: no subscription to nerve.samples
    orchestrator.on_measure(measurement("h-1", 1, {"cpu": 1.0}, ts=clock.seconds()))
    orchestrator.publish_samples()
    assert fake.published_on("nerve.samples") == [] and orchestrator.samples_received == {}
    orchestrator.subscription_created(1, {"id": 9, "uri": "nerve.samples", "match": "exact"})  # a recorder joins
    orchestrator.on_measure(measurement("h-1", 2, {"cpu": 1.0}, ts=clock.seconds() + 1))
    orchestrator.publish_samples()
    [event] = fake.published_on("nerve.samples")
    assert event["hosts"]["h-1"]["seq"] == [2]  # seq 1 went to nobody; the recorder's gap fill reads the window


def test_a_standby_that_takes_over_hands_over_its_last_rounds_too(clock):
    # The active orchestrator may die holding a round it never published: the recorder skips what it already has.
    orchestrator, fake = active_orchestrator(clock)
    orchestrator.active = False
    for seq in range(1, 8):
        orchestrator.on_measure(measurement("h-1", seq, {"cpu": 1.0}, ts=clock.seconds()))
        orchestrator.publish_samples()
        clock.advance(1)
    assert fake.published_on("nerve.samples") == []
    orchestrator.active = True
    orchestrator.on_measure(measurement("h-1", 8, {"cpu": 1.0}, ts=clock.seconds()))
    orchestrator.publish_samples()
    [event] = fake.published_on("nerve.samples")
    assert event["hosts"]["h-1"]["seq"] == [3, 4, 5, 6, 7, 8]  # the last SAMPLES_HANDOVER_ROUNDS rounds, then new
    orchestrator.on_measure(measurement("h-1", 9, {"cpu": 1.0}, ts=clock.seconds() + 1))
    orchestrator.publish_samples()
    assert fake.published_on("nerve.samples")[-1]["hosts"]["h-1"]["seq"] == [9]


def test_levels_per_family_and_anomaly_scores_come_from_compact_and_full_answers(clock):
    samples = [{"seq": 1, "ts": clock.seconds(), "metrics": {"cpu": 95.0, "cpu_core.0": 10.0, "mem": 10.0}}]
    [compact] = analyze_batch([{"host_id": "h", "state": None, "samples": samples}], compact=True)
    [full] = analyze_batch([{"host_id": "h", "state": None, "samples": samples}])
    assert analysis_summary(compact) == analysis_summary(full)
    levels, anomaly = analysis_summary(compact)
    assert levels["cpu"] == "HIGH" and levels["mem"] == "LOW" and set(anomaly) == {"cpu", "cpu_core.0", "mem"}
    assert analysis_summary(None) == ({}, {})


def test_samples_since_pages_the_windows_by_host_and_refuses_bad_arguments(clock):
    orchestrator, fake = active_orchestrator(clock)
    start = clock.seconds()
    for seq in range(1, 4):
        for host_id in ("a", "b", "c"):
            orchestrator.on_measure(measurement(host_id, seq, {"cpu": float(seq)}, ts=start + seq))
    page = samples_page(orchestrator.hosts, start + 1, None, None, max_rows=4)
    assert list(page["hosts"]) == ["a", "b"] and page["hosts"]["a"]["seq"] == [2, 3] and page["next"] == "b"
    rest = orchestrator.samples_since(start + 1, after=page["next"])
    assert list(rest["hosts"]) == ["c"] and rest["next"] is None
    assert list(orchestrator.samples_since(start, hosts=["b", "zz"])["hosts"]) == ["b"]
    for bad in ({"since": "x"}, {"since": 1, "hosts": "a"}, {"since": 1, "after": 3}):
        with pytest.raises(InvalidArgument):
            orchestrator.samples_since(**bad)
