"""nerve's public framework: decorate plain functions, run them with `nerve run`, raise these errors.

    from components import on, procedure, every, on_join, on_stop, Mesh, InvalidArgument

Everything else under `components` (the `mesh`, `monitor`, `tsp`, `node` and `cli` packages) is
importable but internal: it may change without notice. `components.testing.FakeMesh` runs a
component's functions with plain calls, no router needed.
"""

from components.mesh.decorators import every, on, on_join, on_stop, procedure
from components.mesh.errors import (
    ConfigError,
    InvalidArgument,
    NerveError,
    NotAuthenticated,
    NotAuthorized,
    NotFound,
    Unavailable,
)

__all__ = ["on", "procedure", "every", "on_join", "on_stop", "Mesh", "NerveError", "ConfigError", "InvalidArgument", "NotFound",
           "Unavailable", "NotAuthenticated", "NotAuthorized"]


def __getattr__(name):
    # Mesh imports Autobahn and Twisted; loaded on first use, so `import components` stays light for a tracker.
    if name == "Mesh":
        from components.mesh.session import Mesh

        return Mesh
    raise AttributeError(f"module 'components' has no attribute {name!r}")
