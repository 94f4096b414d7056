"""Options and helpers every `nerve` command shares: where the router is, who we are, how a component runs."""

import os
import sys

import click

from components.mesh import credentials
from components.mesh.config import DEFAULT_ROUTER, LOG_LEVELS, MeshConfig
from components.mesh.errors import ConfigError, InvalidArgument
from components.mesh.tuning import parse_tuning

# Roles that yield the CPU on a busy machine to the monitoring path (router, trackers, orchestrator, analyzers,
# alerts, pages): TSP compute is batch work. Analyzers stay at 0, since levels and alerts wait for them, and so do
# simulators, whose delays would count in every latency the mesh reports. Idle CPU compute still gets in full.
BACKGROUND_ROLES = ("compute",)
BACKGROUND_NICE = 10


def mesh_options(role, one_shot=False):
    """Click options shared by every component: where the router is, who we are, how it shares the CPU.

    A one-shot command (`one_shot`: one call or publish, then it waits for the answer and exits) has no --nice: it
    does next to no work of its own, so its priority changes nothing and the flag would only suggest it does."""

    def decorate(command):
        options = [
            click.option("--router", envvar="NERVE_ROUTER", default=DEFAULT_ROUTER, show_default=True, show_envvar=True,
                         help="Router URL: rs://HOST:PORT (RawSocket, fastest) or ws://HOST:PORT/ws."),
            click.option("--realm", envvar="NERVE_REALM", default="nerve", show_default=True, show_envvar=True),
            click.option("--authid", envvar="NERVE_AUTHID", default=None, show_envvar=True,
                         help=f"Identity to join as [default: {role}-HOST-PID or the host id]."),
            click.option("--ticket", envvar="NERVE_TICKET", default=None, show_envvar=True,
                         help="Credential for the authid; default: derived from the secrets file."),
            click.option("--secrets-file", envvar="NERVE_SECRETS_FILE", default=None, show_envvar=True,
                         type=click.Path(dir_okay=False), help=f"Role secrets [default: {credentials.DEFAULT_SECRETS_FILE}]."),
            click.option("--log-level", envvar="NERVE_LOG_LEVEL", default="info", show_default=True, show_envvar=True,
                         type=click.Choice(LOG_LEVELS)),
            click.option("--ca-file", envvar="NERVE_CA_FILE", default=None, show_envvar=True, type=click.Path(dir_okay=False),
                         help="CA certificate to verify a wss:// or rss:// router with (e.g. .crossbar/tls/ca.pem)."),
            *([] if one_shot else [click.option(
                "--nice", envvar="NERVE_NICE", default=BACKGROUND_NICE if role in BACKGROUND_ROLES else 0,
                show_default=True, show_envvar=True, type=click.IntRange(0, 19),
                help="CPU priority as nice(1) counts it: higher yields to the other processes when the "
                     "machine is busy (a process started at a higher one keeps it).")]),
            # For benches only (docs/deviations.md): switches parts of the library tuning off, e.g. tcp_nodelay=off.
            click.option("--tuning", envvar="NERVE_TUNING", default="", hidden=True),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def build_mesh_config(role, router, realm, authid, ticket, secrets_file, log_level, ca_file, nice=0, tuning=""):
    """The MeshConfig from the common options; a bad value is a usage error (exit 2)."""
    try:
        settings = parse_tuning(tuning)
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="--tuning / NERVE_TUNING") from error
    return checked(MeshConfig, role=role, router=router, realm=realm, authid=authid, ticket=ticket,
                   secrets_file=secrets_file, log_level=log_level, ca_file=ca_file, nice=nice, tuning=settings)


def checked(factory, **values):
    """Build a config object, turning its validation error into a click usage error."""
    try:
        return factory(**values)
    except (ConfigError, InvalidArgument) as error:
        raise click.UsageError(str(error)) from error


def split_mesh(kwargs):
    """Separate the common mesh options from a command's own options (a one-shot command has no nice)."""
    names = ("router", "realm", "authid", "ticket", "secrets_file", "log_level", "ca_file", "nice", "tuning")
    return {name: kwargs.pop(name) for name in names if name in kwargs}, kwargs


# Optional modules autobahn imports when installed that a tracker never uses. The tracker's transports
# speak msgpack (RawSocket) or msgpack/json (WebSocket) and it authenticates with a ticket.
TRACKER_UNUSED_MODULES = (
    "bjdata",  # the UBJSON serializer; it imports NumPy (~16 MB of the tracker's RSS)
    "autobahn.flatbuffers",  # the FlatBuffers serializer's runtime, which imports NumPy too
    "argon2", "passlib",  # WAMP-SCRAM authentication (~0.7 MB)
    # NVX, cffi-compiled UTF-8 validation and masking for large WebSocket frames (~1.3 MB): a tracker sends
    # one small frame a second (none over RawSocket), so autobahn's pure-Python fallback costs nothing.
    "_nvx_utf8validator", "_nvx_xormasker",
)


def skip_unused_modules():
    """Make autobahn skip the optional modules a tracker never uses, as if they were not installed."""
    for name in TRACKER_UNUSED_MODULES:
        if name not in sys.modules:  # already loaded in this process: nothing left to save
            # An import of a name mapped to None raises ImportError, which autobahn treats as "not installed".
            sys.modules[name] = None


def run_or_exit(targets, config, mesh, name):
    """Run the component with its tuning applied and its garbage collections timed (nerve.stats reports them), and
    exit with its code."""
    from components.mesh.collector import time_collections
    from components.mesh.runner import run
    from components.mesh.tuning import apply_process_tuning

    time_collections()
    apply_process_tuning(config.mesh.tuning)
    yield_cpu(config.mesh.nice)
    sys.exit(run(targets, config, mesh=mesh, name=name))


def yield_cpu(nice):
    """Run every thread of this process at `nice` or above (a thread already above it keeps its own)."""
    tasks = "/proc/self/task"  # on Linux a nice value belongs to a thread: NumPy's and others' too
    for thread in (int(tid) for tid in os.listdir(tasks)) if os.path.isdir(tasks) else (0,):
        try:
            if os.getpriority(os.PRIO_PROCESS, thread) < nice:
                os.setpriority(os.PRIO_PROCESS, thread, nice)
        except ProcessLookupError:  # the thread ended meanwhile
            continue


DEFAULT_DATA_DIR = ".nerve"


def data_dir_option(command):
    """--data-dir / NERVE_DATA_DIR: where a component keeps what must survive restarts (alerts, outbox, history)."""
    return click.option("--data-dir", envvar="NERVE_DATA_DIR", default=DEFAULT_DATA_DIR, show_default=True,
                        show_envvar=True, type=click.Path(file_okay=False),
                        help="Directory of the component's stores (created if missing).")(command)


def tls_options(command):
    """--tls (development CA) or --tls-cert/--tls-key (your own certificate)."""
    command = click.option("--tls-key", envvar="NERVE_TLS_KEY", default=None, type=click.Path(exists=True, dir_okay=False),
                           show_envvar=True, help="Private key for --tls-cert.")(command)
    command = click.option("--tls-cert", envvar="NERVE_TLS_CERT", default=None, type=click.Path(exists=True, dir_okay=False),
                           show_envvar=True, help="Serve https/wss/rss with this certificate (PEM).")(command)
    return click.option("--tls", "dev_tls", is_flag=True,
                        help="Serve https/wss/rss with a development certificate (CA in .crossbar/tls/ca.pem).")(command)


def tls_files(dev_tls, tls_cert, tls_key):
    """The TlsFiles chosen by the TLS options, or None for plain TCP."""
    from components.node.tls import TlsFiles, development_certificates

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_cert:
        return checked(TlsFiles, key=tls_key, certificate=tls_cert)
    return development_certificates() if dev_tls else None
