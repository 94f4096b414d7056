"""Helpers for testing components: with plain calls (FakeMesh, coming next) or against a real router (live)."""
