"""Limits the router worker keeps whatever its dependencies set: what one peer's input may cost it."""

import sys

# CPython's own default. Crossbar's worker imports py_ecc, which raises the limit to 100,000; the JSON decoder
# then follows a frame nested 100,000 deep and the router logs a traceback as long (docs/security.md).
RECURSION_LIMIT = 1000


def keep_recursion_limit():
    """Put the worker's recursion limit back to RECURSION_LIMIT (idempotent); returns the limit it found."""
    found = sys.getrecursionlimit()
    if found != RECURSION_LIMIT:
        sys.setrecursionlimit(RECURSION_LIMIT)
    return found
