"""Testing components: `FakeMesh` runs them with plain calls; `components.testing.live` starts a real router."""

from components.testing.fake import FakeMesh

__all__ = ["FakeMesh"]
