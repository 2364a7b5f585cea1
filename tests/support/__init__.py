"""Helpers shared by the test packages: servers on loopback, spies, wheelhouses."""
