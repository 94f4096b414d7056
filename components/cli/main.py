"""The `nerve` command line: run the mesh or any of its components, send and listen to events."""

import json
import sys
import time

import click

from components.cli.options import (
    build_mesh_config,
    checked,
    data_dir_option,
    mesh_options,
    run_or_exit,
    skip_unused_modules,
    split_mesh,
    tls_files,
    tls_options,
)
from components.mesh import credentials
from components.mesh.errors import InvalidArgument, NerveError
from components.export import DEFAULT_PORT as DEFAULT_EXPORTER_PORT
from components.export.commands import exporter
from components.history.commands import recorder
from components.tsp.commands import compute, solver, tsp

def _listen_address(ctx, param, value):
    from components.node.routerctl import check_bindable, checked_listen

    try:
        address = checked_listen(value)
        check_bindable(address)
        return address
    except NerveError as error:
        raise click.BadParameter(str(error)) from error


def _allowed_origins(ctx, param, values):
    from components.node.routerctl import origin_pattern

    try:
        return tuple(origin_pattern(value) for value in values)
    except NerveError as error:
        raise click.BadParameter(str(error)) from error


def exposure_options(command):
    """--listen (which address the router binds to) and --allow-origin (which other pages may open its WebSocket)."""
    command = click.option(
        "--allow-origin", "allowed_origins", envvar="NERVE_ALLOWED_ORIGINS", multiple=True, show_envvar=True,
        callback=_allowed_origins, metavar="ORIGIN",
        help="Also accept browsers on the WebSocket from this origin, e.g. https://nerve.example.com behind a "
             "TLS proxy (repeatable; the variable takes several, space-separated). The router's own origins "
             "(127.0.0.1, localhost and the listen address, at --port) are always accepted.")(command)
    return click.option(
        "--listen", envvar="NERVE_LISTEN", default="127.0.0.1", show_default=True, show_envvar=True,
        callback=_listen_address, metavar="ADDRESS",
        help="IP address the router listens on: 127.0.0.1 serves this machine only; 0.0.0.0 (or ::) every "
             "interface, for trackers and browsers on other machines.")(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main():
    """nerve: a reactive monitoring and compute mesh on WAMP, routed by Crossbar.io."""


@main.command()
@click.option("--port", envvar="NERVE_PORT", default=8080, show_default=True, show_envvar=True, type=click.IntRange(1, 65535))
@click.option("--analyzers", default=2, show_default=True, type=click.IntRange(0, 32), help="Analyzer instances to start.")
@click.option("--compute", default=1, show_default=True, type=click.IntRange(0, 64), help="TSP compute instances to start.")
@click.option("--hosts", envvar="NERVE_HOSTS", default=0, show_default=True, type=click.IntRange(0, 100000),
              help="Also start a simulator with this many synthetic hosts.")
@click.option("--secrets-file", envvar="NERVE_SECRETS_FILE", default=None, type=click.Path(dir_okay=False), show_envvar=True)
@click.option("--runtime-dir", envvar="NERVE_RUNTIME_DIR", default=None, show_envvar=True,
              type=click.Path(file_okay=False), metavar="DIR",
              help="Where the router's runtime config and every child's log go, under DIR/<port>/ "
                   "[default: .crossbar/runtime].")
# For benches (bench/chaos_bench.py): hot standby orchestrators beside the first, as orchestrator-2, ...
@click.option("--orchestrators", default=1, type=click.IntRange(1, 4), hidden=True)
@click.option("--exporter-port", envvar="NERVE_EXPORTER_PORT", default=DEFAULT_EXPORTER_PORT, show_default=True,
              show_envvar=True, type=click.IntRange(0, 65535),
              help="Port of the Prometheus exporter's /metrics (0: no exporter).")
@click.option("--notify", envvar="NERVE_NOTIFY_CONFIG", default=None, show_envvar=True, metavar="FILE",
              type=click.Path(dir_okay=False), help="Also run `nerve notifier` with this config (docs/alerts.md).")
@data_dir_option
@tls_options
@exposure_options
def up(port, analyzers, compute, hosts, secrets_file, runtime_dir, orchestrators, exporter_port, notify, data_dir,
       dev_tls, tls_cert, tls_key, listen, allowed_origins):
    """Start the router, an orchestrator, a tracker for this machine and analyzers, restarting any that exits (logs in
    .crossbar/runtime/<port>/logs/); Ctrl-C stops them all, the router last."""
    from components.node.supervisor import run_mesh

    tls = tls_files(dev_tls, tls_cert, tls_key)
    if notify:  # a bad notifier config stops `nerve up` now, not its child five times over
        from components.notify.config import load_notifier_config

        checked(load_notifier_config, path=notify, mesh=None, data_dir=data_dir)
    sys.exit(run_mesh(port=port, analyzers=analyzers, compute=compute, hosts=hosts, secrets_file=secrets_file, tls=tls,
                      listen=listen, allowed_origins=allowed_origins, runtime_base=runtime_dir, orchestrators=orchestrators,
                      data_dir=data_dir, exporter_port=exporter_port, notify=notify))


@main.command()
@click.option("--port", envvar="NERVE_PORT", default=8080, show_default=True, show_envvar=True, type=click.IntRange(1, 65535))
@click.option("--secrets-file", envvar="NERVE_SECRETS_FILE", default=None, type=click.Path(dir_okay=False), show_envvar=True)
@tls_options
@exposure_options
def router(port, secrets_file, dev_tls, tls_cert, tls_key, listen, allowed_origins):
    """Run the Crossbar router with the project's config (web page at /, WAMP at /ws, RawSocket on the same port)."""
    import os

    from components.node.routerctl import router_command

    command = router_command(port, secrets_file, tls=tls_files(dev_tls, tls_cert, tls_key), listen=listen,
                             allowed_origins=allowed_origins)
    os.execv(command[0], command)


@main.command()
@mesh_options("tracker")
@click.option("--interval", envvar="NERVE_INTERVAL", default=1.0, show_default=True, type=float, show_envvar=True,
              help="Seconds between measurements.")
@click.option("--host-id", envvar="NERVE_HOST_ID", default=None, show_envvar=True,
              help="Host id in topics [default: the hostname made URI-safe].")
@click.option("--hosts", envvar="NERVE_HOSTS", default=0, show_default=True, type=click.IntRange(0, 100000), show_envvar=True,
              help="Simulate this many hosts (sim-0000 ...) instead of measuring this machine.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed of the simulation.")
@click.option("--aligned", is_flag=True, help="Simulated hosts all measure at the same instant (a worst-case burst) "
                                              "instead of spread over the interval like independent machines.")
@click.option("--buffer-seconds", envvar="NERVE_BUFFER_SECONDS", default=600.0, show_default=True, type=float,
              show_envvar=True, help="Measurements kept while the router or orchestrator is away (oldest dropped first).")
def tracker(**kwargs):
    """Measure this machine (or simulate many) and publish nerve.measure.<host_id> every interval."""
    skip_unused_modules()  # before the imports below load autobahn: a tracker runs on every host, so its memory counts
    from components.mesh.session import Mesh
    from components.monitor.tracker import Tracker, TrackerConfig, local_host_id

    common, own = split_mesh(kwargs)
    role = "simulator" if own["hosts"] else "tracker"
    if common["authid"] is None:
        common["authid"] = "simulator" if own["hosts"] else (own["host_id"] or local_host_id())
    config = checked(TrackerConfig, mesh=build_mesh_config(role, **common), **own)
    mesh = Mesh(config)
    run_or_exit([Tracker(config, mesh)], config, mesh, "tracker")


@main.command()
@mesh_options("analyzer")
@click.option("--concurrency", envvar="NERVE_CONCURRENCY", default=1, show_default=True, type=click.IntRange(1, 64),
              show_envvar=True, help="Calls this instance serves at once (the router enforces it).")
@click.option("--thresholds", envvar="NERVE_THRESHOLDS", default="", show_envvar=True,
              help="Per metric family LOW:HIGH[:hysteresis[:min seconds]], e.g. cpu=25:75,mem=70:90:5:2.")
@click.option("--extra-work-ms", default=0.0, type=click.FloatRange(0, 10000), hidden=True)  # benches: CPU per call
def analyzer(thresholds, **kwargs):
    """Serve nerve.analyze (shared round robin): levels, mean, p95, trend and anomaly score per metric."""
    from components.monitor.analysis import DEFAULT_THRESHOLDS, parse_thresholds
    from components.monitor.analyzer import Analyzer, AnalyzerConfig
    from components.mesh.session import Mesh

    common, own = split_mesh(kwargs)
    try:
        merged = dict(DEFAULT_THRESHOLDS, **(parse_thresholds(thresholds) if thresholds else {}))
    except InvalidArgument as error:
        raise click.BadParameter(str(error), param_hint="--thresholds") from error
    config = checked(AnalyzerConfig, mesh=build_mesh_config("analyzer", **common), thresholds=merged, **own)
    mesh = Mesh(config)
    run_or_exit([Analyzer(config, mesh)], config, mesh, "analyzer")


@main.command()
@mesh_options("orchestrator")
@click.option("--tick", envvar="NERVE_TICK", default=0.25, show_default=True, type=float, show_envvar=True,
              help="Seconds between digests (each carries only the hosts that changed).")
@click.option("--window", envvar="NERVE_WINDOW", default=300.0, show_default=True, type=float, show_envvar=True,
              help="Seconds of samples kept per host.")
@click.option("--batch-size", envvar="NERVE_BATCH_SIZE", default=100, show_default=True, type=int, show_envvar=True,
              help="Hosts per nerve.analyze call.")
@click.option("--max-batch-size", envvar="NERVE_MAX_BATCH_SIZE", default=2500, show_default=True, type=int,
              show_envvar=True, help="Hosts per call when a backlog is spread over the free analyzer slots "
              "(calls also stay under 6 MiB).")
@click.option("--batch-delay", envvar="NERVE_BATCH_DELAY", default=0.02, show_default=True, type=float, show_envvar=True,
              help="Seconds to gather hosts into a call after the first new measurement (latency vs calls).")
@click.option("--analysis-events", envvar="NERVE_ANALYSIS_EVENTS", default="subscribed", show_default=True,
              type=click.Choice(["subscribed", "all"]), show_envvar=True,
              help="Publish nerve.analysis.<host> only while someone subscribes to it, or always.")
@click.option("--samples-every", envvar="NERVE_SAMPLES_EVERY", default=1.0, show_default=True,
              type=click.FloatRange(0, 3600), show_envvar=True,
              help="Seconds between nerve.samples events (every measurement, batched, for recorders); 0: off.")
@click.option("--down-after", envvar="NERVE_DOWN_AFTER", default=30.0, show_default=True, type=float, show_envvar=True,
              help="Seconds without a measurement (at least 10 intervals) before a host is reported silent: the alert "
              "keeper makes it DOWN while its tracker's session is still open.")
# For benches and mixed-version upgrades (docs/architecture.md): how nerve.analyze calls travel.
@click.option("--analysis-wire", default="packed", type=click.Choice(["packed", "compact", "full"]), hidden=True)
def orchestrator(**kwargs):
    """Subscribe measurements, farm analysis out to analyzers, publish analysis, alerts and the digest."""
    from components.monitor.orchestrator import Orchestrator, OrchestratorConfig
    from components.mesh.session import Mesh

    common, own = split_mesh(kwargs)
    if common["authid"] is None:
        common["authid"] = "orchestrator"
    config = checked(OrchestratorConfig, mesh=build_mesh_config("orchestrator", **common), **own)
    mesh = Mesh(config)
    run_or_exit([Orchestrator(config, mesh)], config, mesh, "orchestrator")


@main.command()
@mesh_options("alerts")
@data_dir_option
@click.option("--reboot-hold", envvar="NERVE_REBOOT_HOLD", default=600.0, show_default=True, show_envvar=True,
              type=float, help="Seconds a host's REBOOT alert stays firing before it resolves by itself.")
def alerts(data_dir, **kwargs):
    """Keep alert records (acks, silences, host DOWN/OFFLINE/REBOOT) in DATA_DIR/alerts.sqlite3; serve nerve.alert.ack,
    nerve.alerts.open and nerve.silence.*."""
    from components.alerts.keeper import AlertKeeper, KeeperConfig
    from components.mesh.session import Mesh

    common, own = split_mesh(kwargs)
    if common["authid"] is None:
        common["authid"] = "alerts"
    config = checked(KeeperConfig, mesh=build_mesh_config("alerts", **common), data_dir=data_dir, **own)
    mesh = Mesh(config)
    try:
        keeper = AlertKeeper(config, mesh)
    except NerveError as error:
        raise click.UsageError(str(error)) from error
    run_or_exit([keeper], config, mesh, "alerts")


@main.command()
@mesh_options("notifier")
@click.option("--config", "config_file", envvar="NERVE_NOTIFY_CONFIG", required=True, show_envvar=True,
              type=click.Path(dir_okay=False), metavar="FILE",
              help="The notifier's TOML file: channels (webhook, email, alertmanager) and routes (docs/alerts.md).")
@data_dir_option
def notifier(config_file, data_dir, **kwargs):
    """Send alerts to people (webhooks, mail, Alertmanager) as FILE routes them; the outbox is kept in DATA_DIR."""
    from components.mesh.session import Mesh
    from components.notify.config import load_notifier_config
    from components.notify.notifier import Notifier

    common, _ = split_mesh(kwargs)
    if common["authid"] is None:
        common["authid"] = "notifier"
    config = checked(load_notifier_config, path=config_file, mesh=build_mesh_config("notifier", **common),
                     data_dir=data_dir)
    mesh = Mesh(config)
    run_or_exit([Notifier(config, mesh)], config, mesh, "notifier")


def print_event(topic, payload):
    """One line per event: time, topic, compact JSON."""
    stamp = time.strftime("%H:%M:%S")
    click.echo(f"{stamp} {topic} {json.dumps(payload, separators=(',', ':'), default=str)}")
    sys.stdout.flush()


@main.command()
@mesh_options("operator")
@click.option("--on", "topic", required=True, help="Topic, or a prefix ending in '.' (e.g. nerve.alert.).")
def listen(topic, **kwargs):
    """Print every event on a topic or topic prefix until Ctrl-C."""
    from components.cli.listen import ListenConfig, Listener
    from components.mesh.session import Mesh

    common, _ = split_mesh(kwargs)
    config = checked(ListenConfig, mesh=build_mesh_config("operator", **common), topic=topic)
    mesh = Mesh(config)
    run_or_exit([Listener(config, print_event)], config, mesh, "listen")


@main.command()
@mesh_options("operator")
def watch(**kwargs):
    """Print live analysis levels and alerts in the terminal."""
    from components.cli.listen import Watcher, WatchConfig
    from components.mesh.session import Mesh

    common, _ = split_mesh(kwargs)
    config = checked(WatchConfig, mesh=build_mesh_config("operator", **common))
    mesh = Mesh(config)
    run_or_exit([Watcher(click.echo)], config, mesh, "watch")


@main.group()
def alert():
    """Send ad-hoc alerts."""


@alert.command("send")
@mesh_options("operator", one_shot=True)
@click.option("--on", "topic", required=True, help="Topic to publish on, e.g. nerve.alert.web-01 or app.deploy.")
@click.argument("message")
def alert_send(topic, message, **kwargs):
    """Publish MESSAGE as one event on TOPIC, acknowledged by the router; exits 1 if refused."""
    from components.cli.listen import SendConfig, send_once

    common, _ = split_mesh(kwargs)
    config = checked(SendConfig, mesh=build_mesh_config("operator", **common), topic=topic, message=message)
    sys.exit(send_once(config))


@main.command("run")
@mesh_options("component")
@click.argument("target")
def run_module(target, **kwargs):
    """Run TARGET (a module name or .py file of @on/@procedure/@every functions) as a component."""
    from components.mesh.runner import ComponentConfig, load_module

    common, _ = split_mesh(kwargs)
    config = ComponentConfig(mesh=build_mesh_config("component", **common))
    try:
        module = load_module(target)
    except (ImportError, OSError) as error:
        raise click.BadParameter(f"cannot load {target!r}: {error}", param_hint="TARGET") from error
    run_or_exit([module], config, None, module.__name__)


@main.command()
@click.argument("role", type=click.Choice(credentials.BACKEND_ROLES))
@click.argument("authid")
@click.option("--secrets-file", envvar="NERVE_SECRETS_FILE", default=None, type=click.Path(dir_okay=False), show_envvar=True)
def credential(role, authid, secrets_file):
    """Print the ticket AUTHID must present for ROLE (give it to that machine as NERVE_TICKET)."""
    try:
        role_secrets = credentials.load_or_create(credentials.secrets_path(secrets_file))
    except NerveError as error:
        raise click.ClickException(str(error)) from error
    click.echo(credentials.ticket_for(role_secrets[role], authid))


for command in (compute, solver, tsp, exporter, recorder):
    main.add_command(command)
