"""The driver an app's tests use: listener.devtools.driver, under the name the pytest plugin gives it."""

from __future__ import annotations

from listener.devtools.driver import Ledger, ListenerThread

__all__ = ["Ledger", "ListenerThread"]
