"""The nerve.samples event: every measurement the orchestrator received in the last second, batched for recorders.

Consumers that keep or export every measurement (`nerve recorder`, `nerve exporter`) subscribe to this
one event instead of every nerve.measure.<host>: one event per second per 500 hosts, so they add a
few router messages per second whatever the fleet, not one per measurement.
"""

import numpy as np

from components.monitor.analysis.state import LEVEL, LEVELS, STATE_WIDTH
from components.monitor.analysis.wire import unseal
from components.monitor.measure import family_of
from components.monitor.window import row_values

SAMPLES_TOPIC = "nerve.samples"
SAMPLES_SINCE_MAX_ROWS = 20000  # samples per nerve.samples.since page: about 2 MB at 14 metrics
# Hosts per event: well under the router's message limit, and each event's entries are built in one reactor turn
# (about 10 ms at 500 hosts), which measurements and the digest wait for.
SAMPLES_CHUNK_HOSTS = 500

# Fields and units of a nerve.samples event, served as data beside the code that builds it.
SAMPLES_SCHEMA = {
    "ts": {"type": "float", "unit": "epoch s", "meaning": "when the event was published"},
    "orchestrator": {"type": "str", "meaning": "authid of the active orchestrator that published it"},
    "chunk": {"type": "int", "meaning": "index of this event among the chunks of one publication, from 0"},
    "chunks": {"type": "int", "meaning": "number of events of this publication (at most 500 hosts each)"},
    "hosts": {
        "type": "{host_id: host entry}",
        "meaning": "the hosts measured since the previous publication",
        "entry": {
            "hostname": {"type": "str", "meaning": "the real hostname"},
            "run": {"type": "str or null", "meaning": "the tracker run that measured them"},
            "seq": {"type": "[int]", "meaning": "sequence number of each measurement, ascending by ts"},
            "ts": {"type": "[float]", "unit": "epoch s", "meaning": "when each measurement was taken, ascending"},
            "metrics": {"type": "{metric: [float or null]}",
                        "meaning": "values aligned with seq/ts (null where a measurement lacks the metric); "
                                   "units per family in MEASURE_SCHEMA"},
            "level": {"type": "str or null", "meaning": "the host's level now: LOW, MEDIUM, HIGH or null"},
            "levels": {"type": "{family: str}", "meaning": "latest analysed level per metric family (highest of its "
                                                           "metrics); may be empty"},
            "anomaly": {"type": "{metric: float}", "unit": "robust z-score", "meaning": "latest anomaly score per "
                                                                                        "metric; may be empty"},
        },
    },
}


_FAMILIES = {}  # metric names (tuple) -> the family of each: a host's names rarely change, so this stays small


def _families(names):
    key = tuple(names)
    families = _FAMILIES.get(key)
    if families is None:
        if len(_FAMILIES) > 4096:
            _FAMILIES.clear()
        families = _FAMILIES[key] = [family_of(name) for name in key]
    return families


def analysis_summary(result):
    """({family: level}, {metric: anomaly score}) of an analyzer's latest answer for a host (compact or full).

    Runs for every host every second: the compact form's level codes are read straight from the state's bytes."""
    if not result:
        return {}, {}
    if "anomaly" in result and "state" in result:  # compact: levels live in the state rows
        state = result["state"]
        if isinstance(state, bytes):
            state = unseal(state)
        names = state["names"]
        codes = np.frombuffer(state["rows"], dtype="<f8")[LEVEL::STATE_WIDTH].tolist() if names else []
        scores = result["anomaly"]
    else:
        metrics = result.get("metrics", {})
        names = list(metrics)
        codes = [LEVELS.index(entry["level"]) if entry.get("level") in LEVELS else -1 for entry in metrics.values()]
        scores = [entry.get("anomaly") for entry in metrics.values()]
    highest = {}
    for family, code in zip(_families(names), codes):
        if code > highest.get(family, -1.0):
            highest[family] = code
    return ({family: LEVELS[int(code)] for family, code in highest.items()},
            {name: score for name, score in zip(names, scores) if score is not None})


def host_entry(host, rows):
    """One host's entry of a nerve.samples event from its window rows (seq, ts, names, values) received since the last."""
    if len(rows) == 1:  # the usual case at one measurement a second
        names, values = rows[0][2], rows[0][3]
        metrics = {name: [value] for name, value in zip(names, row_values(names, values))}
    else:
        rows = sorted(rows, key=lambda row: row[1])
        metrics = {}
        for position, (_, _, names, values) in enumerate(rows):
            for name, value in zip(names, row_values(names, values)):
                column = metrics.get(name)
                if column is None:
                    column = metrics[name] = [None] * len(rows)
                column[position] = value
    levels, anomaly = analysis_summary(host.result)
    return {"hostname": host.hostname, "run": host.run, "seq": [row[0] for row in rows], "ts": [row[1] for row in rows],
            "metrics": metrics, "level": host.level_name, "levels": levels, "anomaly": anomaly}


def samples_events(received, hosts, now, orchestrator):
    """The nerve.samples events for {host_id: [rows]} received since the last publication (none when empty).

    A generator: each event's host entries are built when it is asked for, so a publisher can hand the reactor back
    between chunks."""
    host_ids = [host_id for host_id, rows in received.items() if rows and host_id in hosts]
    chunks = [host_ids[start:start + SAMPLES_CHUNK_HOSTS] for start in range(0, len(host_ids), SAMPLES_CHUNK_HOSTS)]
    for index, chunk in enumerate(chunks):
        yield {"ts": round(now, 3), "orchestrator": orchestrator, "chunk": index, "chunks": len(chunks),
               "hosts": {host_id: host_entry(hosts[host_id], received[host_id]) for host_id in chunk}}


def samples_page(hosts, since, wanted, after, max_rows):
    """One page of nerve.samples.since: {hosts: {host_id: entry}, next}, hosts in id order after `after`."""
    page, rows_taken, next_after = {}, 0, None
    for host_id in sorted(hosts if wanted is None else set(wanted) & hosts.keys()):
        if after is not None and host_id <= after:
            continue
        rows = [row for row in hosts[host_id].window.entries if row[1] > since]
        if page and rows_taken + len(rows) > max_rows:
            break
        if rows:
            page[host_id] = host_entry(hosts[host_id], rows)
            rows_taken += len(rows)
        next_after = host_id
    else:
        next_after = None
    return {"hosts": page, "next": next_after}


def merged_samples(rounds):
    """Rounds of received samples ({host_id: [row, ...]}, oldest first) as one, each host's rows in order."""
    merged = {}
    for received in rounds:
        for host_id, rows in received.items():
            merged.setdefault(host_id, []).extend(rows)
    return merged
