"""The click command `nerve exporter`."""

import click

from components.cli.options import build_mesh_config, checked, mesh_options, run_or_exit, split_mesh
from components.export import DEFAULT_PORT


@click.command()
@mesh_options("exporter")
@click.option("--port", envvar="NERVE_EXPORTER_PORT", default=DEFAULT_PORT, show_default=True, show_envvar=True,
              type=click.IntRange(0, 65535), help="Port of /metrics (0: any free port, printed at start).")
@click.option("--listen", envvar="NERVE_EXPORTER_LISTEN", default="127.0.0.1", show_default=True, show_envvar=True,
              metavar="ADDRESS", help="IP address /metrics listens on: 127.0.0.1 for a Prometheus on this machine, "
                                      "0.0.0.0 (or ::) for one elsewhere.")
@click.option("--stats-every", envvar="NERVE_EXPORTER_STATS_EVERY", default=5.0, show_default=True, show_envvar=True,
              type=float, help="Seconds between nerve.stats calls for the orchestrator's counters.")
@click.option("--stale-after", envvar="NERVE_EXPORTER_STALE_AFTER", default=5.0, show_default=True, show_envvar=True,
              type=float, help="A host drops out after this many seconds (at least 3 of its intervals) without "
                               "measurements.")
def exporter(**kwargs):
    """Serve /metrics for Prometheus: every host's latest values, levels and anomaly scores, and the orchestrator's
    counters, from the nerve.samples events (a scrape costs no router message)."""
    from twisted.internet import error, reactor

    from components.export.exporter import Exporter, ExporterConfig, serve_metrics
    from components.mesh.session import Mesh

    common, own = split_mesh(kwargs)
    if common["authid"] is None:
        common["authid"] = "exporter"
    config = checked(ExporterConfig, mesh=build_mesh_config("exporter", **common), **own)
    mesh = Mesh(config)
    component = Exporter(config, mesh)
    try:
        url = serve_metrics(component, reactor)
    except error.CannotListenError as problem:
        raise click.ClickException(f"cannot serve /metrics on {config.listen} port {config.port} "
                                   f"({problem.socketError}); pass another --port (or --listen)") from problem
    click.echo(f"exporter: serving Prometheus metrics at {url}", err=True)
    run_or_exit([component], config, mesh, "exporter")
