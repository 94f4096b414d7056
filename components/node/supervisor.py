"""`nerve up`: the router and a working mesh as child processes; SIGINT/SIGTERM stops them all, no orphans."""

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time

from components.mesh.errors import NerveError
from components.node.routerctl import port_open, router_command, wait_for_port

PR_SET_PDEATHSIG = 1
STOP_GRACE_SECONDS = 10


def _die_with_parent():
    # Runs in the child before exec: if `nerve up` is killed outright, the kernel stops the child too.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: children are still stopped by the normal shutdown path


BARE_CROSSBAR_LINE = re.compile(r"^\S+ \[\w+\s+\d+\]\s*$")


def _relay(stream, name):
    # Crossbar prints a bare "<time> [Controller NNN]" line at start; everything else goes through prefixed.
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        if line and not BARE_CROSSBAR_LINE.match(line):
            sys.stderr.write(f"{name}: {line}\n")
            sys.stderr.flush()


class Supervisor:
    """Starts child processes, relays the router's output, and stops them all together."""

    def __init__(self):
        self.children = []
        self.stopping = False

    def start(self, name, command, env, relay=False):
        """Start one child process in its own session: Ctrl-C reaches only `nerve up`, which stops children in order."""
        output = subprocess.PIPE if relay else None
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT if relay else None,
                                   preexec_fn=_die_with_parent, start_new_session=True)
        if relay:
            threading.Thread(target=_relay, args=(process.stdout, name), daemon=True).start()
        self.children.append((name, process))
        return process

    def stop(self, *_):
        """Ask every child to stop (SIGTERM), then kill the ones still running after the grace period."""
        if self.stopping:
            return
        self.stopping = True
        # Components first so they leave cleanly while the router still runs.
        for name, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for name, process in self.children:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                sys.stderr.write(f"nerve up: {name} did not stop in {STOP_GRACE_SECONDS} s; killing it\n")
                process.kill()
                process.wait()

    def wait(self):
        """Block until a signal arrives or a child exits unexpectedly; return the exit code."""
        while not self.stopping:
            for name, process in self.children:
                if process.poll() is not None and not self.stopping:
                    sys.stderr.write(f"nerve up: {name} exited with code {process.returncode}; stopping the mesh\n")
                    self.stop()
                    return 1
            time.sleep(0.2)
        return 0


def component_command(*args):
    """The command line of a nerve component run with this interpreter."""
    return [sys.executable, "-m", "components", *args]


def run_mesh(port, analyzers, hosts, compute=1, secrets_file=None, tls=None):
    """Run router, orchestrator, tracker, analyzers, TSP solver and compute (and a simulator with --hosts)."""
    if port_open(port):
        sys.stderr.write(f"nerve up: port {port} is already in use; stop what runs there or pass --port\n")
        return 1
    supervisor = Supervisor()
    interrupted = []

    def on_signal(signum, frame):
        interrupted.append(signum)
        supervisor.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    scheme = "rss" if tls else "rs"
    env = dict(os.environ, NERVE_ROUTER=f"{scheme}://127.0.0.1:{port}", PYTHONUNBUFFERED="1")
    if tls and tls.ca_certificate:
        env["NERVE_CA_FILE"] = str(tls.ca_certificate)
    if secrets_file:
        env["NERVE_SECRETS_FILE"] = os.path.abspath(secrets_file)
    started = time.monotonic()
    try:
        router = supervisor.start("router", router_command(port, secrets_file, tls=tls), env, relay=True)
        wait_for_port(port, router, timeout=60)
    except NerveError as error:
        sys.stderr.write(f"nerve up: {error}\n")
        supervisor.stop()
        return 1
    if interrupted:
        return 0
    supervisor.start("orchestrator", component_command("orchestrator"), env)
    for index in range(analyzers):
        supervisor.start(f"analyzer-{index + 1}", component_command("analyzer", "--authid", f"analyzer-{index + 1}"), env)
    supervisor.start("solver", component_command("solver", "--authid", "solver"), env)
    for index in range(compute):
        supervisor.start(f"compute-{index + 1}", component_command("compute", "--authid", f"compute-{index + 1}"), env)
    supervisor.start("tracker", component_command("tracker"), env)
    if hosts:
        supervisor.start("simulator", component_command("tracker", "--hosts", str(hosts)), env)
    secure = "s" if tls else ""
    print(f"nerve is up in {time.monotonic() - started:.1f} s (router ready; components joining)\n"
          f"  dashboard: http{secure}://127.0.0.1:{port}/\n"
          f"  WebSocket: ws{secure}://127.0.0.1:{port}/ws   RawSocket: r{'ss' if tls else 's'}://127.0.0.1:{port}\n"
          + (f"  development CA (trust it to verify): {tls.ca_certificate}\n" if tls and tls.ca_certificate else "")
          + "  Ctrl-C stops everything.", flush=True)
    return supervisor.wait()
