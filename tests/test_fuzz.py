"""Random payloads thrown at the orchestrator's and analyzer's handlers: bad input is refused, never fatal or poisonous."""

import json
import math
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.monitor.analysis import analyze_batch
from components.mesh.config import MeshConfig
from components.mesh.errors import InvalidArgument
from components.monitor.measure import validate_measure
from components.monitor.orchestrator import Orchestrator, OrchestratorConfig
from components.mesh.handlers import event_handler
from components.mesh.session import Mesh
from components.testing import FakeMesh

FUZZ = settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
NOW = time.time()

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12))
anything = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=12)
metric_names = st.one_of(st.sampled_from(["cpu", "mem", "swap", "load1", "net_recv", "disk_used.root", "cpu_core.0"]),
                         st.text(max_size=10))
metric_values = st.one_of(st.floats(-1e3, 1e9), st.floats(allow_nan=True, allow_infinity=True), scalars)
host_ids = st.one_of(st.sampled_from(["web-01", "db_2", "sim-0001"]), st.text(max_size=70))
timestamps = st.one_of(st.floats(NOW - 7200, NOW + 120), scalars)
measurement_like = st.fixed_dictionaries(
    {}, optional={"host_id": host_ids, "hostname": scalars, "run": scalars, "seq": st.one_of(st.integers(-5, 10**6), scalars),
                  "ts": timestamps, "interval": st.one_of(st.floats(-1, 10), scalars),
                  "metrics": st.one_of(st.dictionaries(metric_names, metric_values, max_size=6), anything)})
payloads = st.one_of(measurement_like, anything)


class Topic:
    def __init__(self, topic):
        self.topic = topic


def fresh_orchestrator():
    config = OrchestratorConfig(mesh=MeshConfig(role="orchestrator"))
    orchestrator = Orchestrator(config, FakeMesh(config).mesh, scheduler=_NoScheduler())
    return orchestrator


class _NoScheduler:
    """Dispatch is not under test here: scheduled calls are dropped."""

    def callLater(self, delay, func, *args):
        return type("Call", (), {"active": lambda self: False})()


ORCHESTRATOR = fresh_orchestrator()
CONSUMER = event_handler(ORCHESTRATOR.on_measure, Mesh(config=None))


@FUZZ
@given(payload=payloads, topic_host=host_ids)
def test_orchestrator_survives_any_measurement_and_keeps_windows_clean(payload, topic_host):
    topic = f"nerve.measure.{payload.get('host_id') if isinstance(payload, dict) and isinstance(payload.get('host_id'), str) else topic_host}"
    CONSUMER(payload, details=Topic(topic))  # must never raise
    for host in ORCHESTRATOR.hosts.values():
        for sample in host.window.samples():
            event = {"host_id": host.host_id, "seq": sample["seq"], "ts": sample["ts"], "interval": 1.0, "metrics": sample["metrics"]}
            validate_measure(event, now=time.time())


# A valid measurement with at most one field at an edge of validity, so both outcomes are common.
VALID = {"host_id": "web-01", "seq": 5, "ts": NOW, "interval": 1.0, "metrics": {"cpu": 50.5, "mem": 20.0}, "run": "r1"}
EDGES = {
    "host_id": ["", "Web", "a" * 65, 7, "web-01"],
    "seq": [0, -1, True, 1.0, 2**70],
    "ts": [NOW + 59.0, NOW + 61.0, NOW - 86399.0, NOW - 86401.0, float("nan"), float("inf"), int(NOW)],
    "interval": [0.5, 0.0, -1.0, float("inf"), float("nan"), 1, True],
    "metrics": [{}, {"gpu": 1.0}, {"": 1.0}, {3: 1.0}, {f"cpu_core.{core}": 1.0 for core in range(513)}]
    + [{"cpu": value} for value in (0, 0.0, -0.0, 100, 100.0, 100.1, 100.2, -1e-9, 2**70, float("nan"), float("inf"), True, "1")],
}
near_valid = st.one_of(st.just(VALID), st.sampled_from(sorted(EDGES)).flatmap(
    lambda field: st.sampled_from(EDGES[field]).map(lambda value: dict(VALID, **{field: value}))))


@FUZZ
@given(payload=st.one_of(near_valid, payloads), topic_host=st.sampled_from(["web-01", "web-01", "other"]),
       known=st.booleans())
def test_the_fast_check_of_a_measurement_accepts_exactly_what_the_full_check_accepts(payload, topic_host, known):
    from components.monitor import measure

    topic = f"nerve.measure.{topic_host}"
    measure._bounds_by_name.clear()
    if known:  # names seen before; others take the full check, which caches them
        measure._bounds_of("cpu"), measure._bounds_of("mem")
    outcomes = []
    for check in (measure.validate_measure, measure._validate_fully):
        try:
            outcomes.append(check(payload, NOW, topic) is payload)
        except InvalidArgument:
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1], (payload, outcomes)


samples = st.lists(st.one_of(
    st.fixed_dictionaries({"seq": st.integers(0, 100), "ts": st.one_of(st.floats(1e9, 2e9), scalars),
                           "metrics": st.one_of(st.dictionaries(metric_names, metric_values, max_size=4), anything)}),
    anything), max_size=4)
host_entries = st.lists(st.one_of(
    st.fixed_dictionaries({"host_id": host_ids, "state": st.one_of(st.none(), anything), "samples": samples}), anything), max_size=3)


@FUZZ
@given(hosts=st.one_of(host_entries, anything))
def test_analyzer_refuses_bad_batches_clearly_and_returns_finite_json(hosts):
    try:
        results = analyze_batch(hosts)
    except InvalidArgument as error:
        assert str(error)  # the message says which field is wrong
        return
    text = json.dumps(results, allow_nan=False)  # fails on NaN/inf anywhere in the output
    assert len(json.loads(text)) == len(hosts)
    for result in results:
        for metric in result["metrics"].values():
            assert all(value is None or isinstance(value, str) or math.isfinite(value) for value in metric.values())
