"""Exactly-once session-pack charging: bookings trigger -> PGMQ -> listener -> use_session."""

__version__ = "0.2.0"

QUEUE = "booking_events"
DEAD_LETTER_QUEUE = "booking_events_dlq"
WAKEUP_CHANNEL = "booking_events"
LISTENER_ROLE = "session_ledger_listener"
