"""Where the router listens and which pages may open its WebSocket: the runtime config `nerve up` / `nerve router` write."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from components.cli.main import main
from components.mesh.errors import ConfigError
from components.node import routerctl
from components.node.routerctl import PROJECT_CONFIG, origin_pattern, own_origins, runtime_config


def websocket_options(config):
    transport = config["workers"][0]["transports"][0]
    return transport["endpoint"], transport["websocket"]["ws"]["options"]


def test_by_default_the_router_listens_on_loopback_and_takes_only_its_own_origins():
    endpoint, options = websocket_options(runtime_config(18081))
    assert endpoint["interface"] == "127.0.0.1" and endpoint["port"] == 18081
    assert set(options["allowed_origins"]) == {"http://127.0.0.1:18081", "https://127.0.0.1:18081",
                                               "http://localhost:18081", "https://localhost:18081"}
    assert options["allow_null_origin"] is False


def test_the_static_config_for_a_bare_crossbar_start_is_as_closed():
    endpoint, options = websocket_options(json.loads(PROJECT_CONFIG.read_text()))
    assert endpoint["interface"] == "127.0.0.1"
    assert set(options["allowed_origins"]) == set(own_origins(endpoint["port"]))
    assert options["allow_null_origin"] is False


def test_listen_and_allowed_origins_reach_the_runtime_config():
    config = runtime_config(18082, listen="192.0.2.7", allowed_origins=["https://Nerve.Example.com", "http://ops.example:8000"])
    endpoint, options = websocket_options(config)
    assert endpoint["interface"] == "192.0.2.7"
    origins = options["allowed_origins"]
    # As Autobahn compares them: scheme://host:port, the port always written out.
    assert {"https://nerve.example.com:443", "http://ops.example:8000", "http://192.0.2.7:18082",
            "http://127.0.0.1:18082"} <= set(origins)
    assert not any("evil" in origin for origin in origins)


def test_listening_on_every_interface_takes_the_machines_own_addresses_as_origins(monkeypatch):
    monkeypatch.setattr(routerctl, "_interface_addresses", lambda version: ["192.0.2.9"])
    monkeypatch.setattr(routerctl.socket, "gethostname", lambda: "Box")
    endpoint, options = websocket_options(runtime_config(18083, listen="0.0.0.0"))
    assert endpoint["interface"] == "0.0.0.0"
    assert {"http://192.0.2.9:18083", "http://box:18083", "http://localhost:18083"} <= set(options["allowed_origins"])
    endpoint, options = websocket_options(runtime_config(18083, listen="::"))
    assert endpoint["interface"] == "::" and endpoint["version"] == 6
    assert "http://::1:18083" in options["allowed_origins"]  # Autobahn writes an IPv6 origin host without brackets


@pytest.mark.parametrize("origin", ["evil.example", "ftp://x.example", "https://x.example/path", "http://x.example:port",
                                    "https://user@x.example", "null", ""])
def test_a_bad_origin_is_refused(origin):
    with pytest.raises(ConfigError):
        origin_pattern(origin)


@pytest.mark.parametrize("address", ["localhost", "256.1.1.1", "0.0.0.0:8080", "", "example.com"])
def test_a_bad_listen_address_is_refused(address):
    with pytest.raises(ConfigError):
        runtime_config(18084, listen=address)


@pytest.mark.parametrize("command", ["router", "up"])
@pytest.mark.parametrize("args, fragment", [
    (["--listen", "not-an-address"], "--listen"),
    (["--listen", "203.0.113.250"], "not an address of this machine"),
    (["--allow-origin", "ftp://x.example"], "--allow-origin"),
])
def test_bad_listen_or_origin_is_a_usage_error(command, args, fragment):
    result = subprocess.run([sys.executable, "-m", "components", command, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert "Usage:" in result.stderr and fragment in result.stderr


def test_nerve_router_hands_listen_and_origins_to_crossbar(monkeypatch, tmp_path):
    started = {}
    monkeypatch.setattr(routerctl, "PROJECT_ROOT", tmp_path)  # the runtime cbdir goes under it
    monkeypatch.setattr("os.execv", lambda path, argv: started.update(argv=argv))
    result = CliRunner().invoke(main, ["router", "--port", "18085", "--listen", "0.0.0.0",
                                       "--allow-origin", "https://nerve.example.com"],
                                env={"NERVE_ALLOWED_ORIGINS": ""})
    assert result.exit_code == 0, result.output
    cbdir = started["argv"][started["argv"].index("--cbdir") + 1]
    runtime = tmp_path / ".crossbar" / "runtime" / "18085"
    endpoint, options = websocket_options(json.loads((runtime / "config.json").read_text()))
    assert cbdir == str(runtime)
    assert endpoint["interface"] == "0.0.0.0"
    assert "https://nerve.example.com:443" in options["allowed_origins"]

    # The variable takes several origins, space-separated.
    result = CliRunner().invoke(main, ["router", "--port", "18085"],
                                env={"NERVE_ALLOWED_ORIGINS": "https://a.example http://b.example:81", "NERVE_LISTEN": "127.0.0.1"})
    assert result.exit_code == 0, result.output
    endpoint, options = websocket_options(json.loads((runtime / "config.json").read_text()))
    assert endpoint["interface"] == "127.0.0.1"
    assert {"https://a.example:443", "http://b.example:81"} <= set(options["allowed_origins"])


def test_nerve_up_hands_listen_and_origins_to_the_mesh(monkeypatch):
    seen = {}
    import components.node.supervisor as supervisor

    monkeypatch.setattr(supervisor, "run_mesh", lambda **kwargs: seen.update(kwargs) or 0)
    result = CliRunner().invoke(main, ["up", "--listen", "0.0.0.0", "--allow-origin", "https://nerve.example.com"],
                                env={"NERVE_ALLOWED_ORIGINS": ""})
    assert result.exit_code == 0, result.output
    assert seen["listen"] == "0.0.0.0" and seen["allowed_origins"] == ("https://nerve.example.com:443",)
