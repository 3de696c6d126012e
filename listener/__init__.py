"""Exactly-once session-pack charging: bookings trigger -> PGMQ -> listener -> use_session."""

__version__ = "0.4.0"

# The NOTIFY channel the trigger wakes a sleeping listener on. Queue, table and role
# names appear only in the SQL files: Python reaches them through named queries.
WAKEUP_CHANNEL = "booking_events"
