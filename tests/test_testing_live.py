"""components.testing.live: what a test, bench or script starts does not outlive it."""

import subprocess
import sys
import textwrap
import time

import psutil

# Starts a router and a component, prints every pid (crossbar's own workers too) and exits without stopping them.
SCRIPT = textwrap.dedent("""
    import sys
    import psutil
    from components.testing.live import ComponentProcess, RouterProcess
    router = RouterProcess().start()
    listener = ComponentProcess(router, "listen", "--on", "app.")
    crossbar = [child.pid for child in psutil.Process(router.process.pid).children(recursive=True)]
    print(router.process.pid, listener.process.pid, *crossbar, flush=True)
    sys.exit(3)
""")


def running(pids):
    """The pids among these that still run (a zombie has finished)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass  # gone, as it should be
    return alive


def test_a_script_that_exits_without_stopping_its_router_and_components_leaves_nothing_running(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    pids = [int(pid) for pid in done.stdout.split()]
    try:
        assert done.returncode == 3, done.stderr
        assert len(pids) >= 3, done.stdout  # the router, the component, at least one crossbar worker
        deadline = time.monotonic() + 10
        while running(pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running(pids) == []
    finally:
        for pid in running(pids):
            psutil.Process(pid).kill()
