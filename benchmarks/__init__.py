"""Benchmarks: plain scripts that print a table and, with ``--record``, append it to docs/benchmarks.md."""
