"""The click command `nerve recorder`."""

import click

from components.cli.options import build_mesh_config, checked, data_dir_option, mesh_options, run_or_exit, split_mesh
from components.history.tiers import parse_retention, parse_size

DEFAULT_RETENTION = "1s=2d,1m=30d,1h=365d"


@click.command()
@mesh_options("recorder")
@data_dir_option
@click.option("--retention", envvar="NERVE_RETENTION", default=DEFAULT_RETENTION, show_default=True, show_envvar=True,
              help="How long each tier is kept: 1s (samples), 1m and 1h (min/mean/max per step); any of them.")
@click.option("--max-disk", envvar="NERVE_MAX_DISK", default="2GB", show_default=True, show_envvar=True,
              help="Disk budget of the store (70 % for 1 s, 20 % for 1 min, 10 % for 1 h); the oldest goes first.")
def recorder(data_dir, retention, max_disk, **kwargs):
    """Record every measurement (from nerve.samples) in tiers under --data-dir; serve nerve.history.range."""
    from components.history.recorder import Recorder, RecorderConfig
    from components.history.store import StoreError, open_store
    from components.mesh.session import Mesh

    common, _ = split_mesh(kwargs)
    if common["authid"] is None:
        common["authid"] = "recorder"
    config = checked(RecorderConfig, mesh=build_mesh_config("recorder", **common), data_dir=data_dir,
                     tiers=checked(parse_retention, text=retention), max_disk=checked(parse_size, text=max_disk))
    try:
        store = open_store(data_dir, config.tiers, config.max_disk)
    except StoreError as error:
        raise click.ClickException(str(error)) from error
    mesh = Mesh(config)
    run_or_exit([Recorder(config, mesh, store)], config, mesh, "recorder")
