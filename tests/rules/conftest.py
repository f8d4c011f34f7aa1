"""Fixtures of the rules tests: the refresh CLI's world (one moto server per worker, reset per
test, and the fake Google), shared with tests/refresh rather than written twice."""

from tests.refresh.conftest import cloud, google, moto_server

__all__ = ["cloud", "google", "moto_server"]
