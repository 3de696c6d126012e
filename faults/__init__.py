"""Fault-injection suite: real listeners, real PostgreSQL, real faults, and a checker at the end.

Run it with ``python -m faults`` from the repository root (see ``--help``).
"""
