"""A router loaded ahead of need: `python -m components.node.warmrouter start --cbdir DIR ...` (crossbar's own
arguments) imports Crossbar and installs its reactor now, then waits for one line on stdin. `start` runs
`crossbar start ...` in this process; anything else, or the end of stdin, exits 0.

`nerve up` keeps one such spare beside a running router (Supervisor's spare_command), so a router that dies is back
in the time its worker takes to start, without the controller's own start first: Crossbar imports web3 and its
Ethereum stack unconditionally, which is most of a controller's start. Only Crossbar's
public entry point (`crossbar.run`, reading sys.argv like the `crossbar` script) and Autobahn's `install_reactor`
are used; the reactor is installed the way `crossbar.run` installs it, so its own call finds it in place.
"""

import os
import sys

START_LINE = b"start\n"


def spare_command(router_command):
    """The command line of a spare for router_command (`crossbar start ...`), run with this interpreter."""
    return [sys.executable, "-m", "components.node.warmrouter", *router_command[1:]]


def load():
    """Import what `crossbar start` imports before it reads its config (the slow part), with its reactor."""
    import crossbar  # noqa: F401  (web3, eth_abi, autobahn: most of the start)
    from autobahn.twisted import install_reactor

    install_reactor(explicit_reactor=os.environ.get("CROSSBAR_REACTOR"), verbose=False, require_optimal_reactor=False)
    import crossbar.node.main  # noqa: F401
    import crossbar.personality  # noqa: F401


def main(argv):
    """Load, wait for the word, then be `crossbar <argv>`; returns an exit code."""
    load()
    if sys.stdin.buffer.readline() != START_LINE:
        return 0
    import crossbar

    sys.argv = ["crossbar", *argv]
    return crossbar.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
