"""Runs in front of each `nerve up` child, then becomes it: `python -S launch.py PARENT_PID COMMAND...`.

Twisted's spawnProcess has no hook that runs in the child before exec (subprocess's preexec_fn), so this small
step does what `nerve up` needs of every child first:
- its own session (setsid): Ctrl-C in the terminal reaches only `nerve up`, which stops the children in order;
- death with `nerve up` (Linux PR_SET_PDEATHSIG, which survives exec): if `nerve up` is killed outright, the kernel
  sends the child SIGTERM, so no child (and no router holding the port) outlives it.
Then it execs the command: same pid, nothing left of this step. Standard library only, run with -S: ~20 ms.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
EXIT_PARENT_GONE = 70
EXIT_CANNOT_RUN = 127


def main(argv):
    """Set the child up and exec its command; returns an exit code only when it cannot."""
    parent, command = int(argv[1]), argv[2:]
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: children are still stopped by `nerve up`'s normal shutdown
    if os.getppid() != parent:
        return EXIT_PARENT_GONE  # `nerve up` died before the signal was armed: nobody would stop this child
    try:
        os.execvp(command[0], command)
    except OSError as error:
        sys.stderr.write(f"nerve up: cannot run {command[0]}: {error.strerror}\n")
        return EXIT_CANNOT_RUN


if __name__ == "__main__":
    sys.exit(main(sys.argv))
