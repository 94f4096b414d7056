"""Router-side tuning that runs inside the Crossbar worker, checked as plain code."""

import pprint

import pytest
from crossbar.router import router as crossbar_router
from twisted.logger import formatEvent

from components.errors import ConfigError
from router import tuning
from router.tuning import LazyPrettyText


def test_lazy_pretty_text_prints_what_pformat_prints_when_a_log_line_is_written():
    value = {"allow": True, "disclose": False, "cache": True, "nested": {"uri": "nerve.measure." + "x" * 80}}
    event = {"log_format": "authorization:\n{authorization}", "authorization": LazyPrettyText(value)}
    assert formatEvent(event) == "authorization:\n" + pprint.pformat(value)
    assert f"{LazyPrettyText([1, 2])!s:>8}" == "  [1, 2]"


def test_crossbar_router_pretty_prints_lazily_unless_the_tuning_turns_it_off():
    try:
        tuning.configure()
        tuning.configure()  # idempotent
        assert crossbar_router.pformat is LazyPrettyText
        assert str(crossbar_router.pformat({"a": 1})) == "{'a': 1}"
        tuning.configure({"lazy_debug_format": False})
        assert crossbar_router.pformat is pprint.pformat
        assert tuning.settings == {"tcp_nodelay": True, "lazy_debug_format": False}
    finally:
        tuning.configure()
    assert tuning.settings == dict(tuning.DEFAULT_SETTINGS)


def test_an_unknown_tuning_name_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match="unknown router tuning tcp_no_delay; known: tcp_nodelay, lazy_debug_format"):
        tuning.configure({"tcp_no_delay": False})


def test_runtime_config_hands_tuning_overrides_to_the_router_component():
    from components.routerctl import runtime_config

    config = runtime_config(18080, tuning={"lazy_debug_format": False})
    extras = [component.get("extra", {}) for worker in config["workers"] for component in worker.get("components", [])]
    assert extras and all(extra["tuning"] == {"lazy_debug_format": False} for extra in extras)
    defaults = runtime_config(18080)
    assert all("tuning" not in component.get("extra", {})
               for worker in defaults["workers"] for component in worker.get("components", []))
