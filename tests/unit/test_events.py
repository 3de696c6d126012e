"""The listener's verdict on a queued message, without a database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from listener.core.events import Accepted, RawMessage, Rejected, judge


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("null", "payload is a JSON null, not an object"),
        ("[1]", "payload is a JSON array, not an object"),
        (
            '{"type": "booking.changed", "v": 2, "booking_id": "x"}',
            "unsupported event type 'booking.changed' version 2",
        ),
        ('{"type": "booking.changed", "v": 1}', "invalid booking_id: Field required"),
        ("[" * 5000 + "]" * 5000, "payload is nested too deeply"),
        ("{not json", "payload is not parseable JSON"),
    ],
)
def test_judge_gives_one_line_reasons(text: str, reason: str) -> None:
    verdict = judge(RawMessage(1, 1, datetime.now(UTC), text), max_payload_bytes=100_000, max_reads=5)
    assert isinstance(verdict, Rejected)
    assert verdict.reason == reason


def test_judge_accepts_exactly_the_triggers_event() -> None:
    booking = "0b6b3f1e-8d5c-4a3e-9f00-1a2b3c4d5e6f"
    raw = RawMessage(
        7, 1, datetime.now(UTC), f'{{"type": "booking.changed", "v": 1, "booking_id": "{booking}"}}'
    )
    verdict = judge(raw, max_payload_bytes=100_000, max_reads=5)
    assert verdict == Accepted(7, booking, raw.enqueued_at)
    assert isinstance(judge(raw, max_payload_bytes=10, max_reads=5), Rejected)
    assert isinstance(
        judge(RawMessage(7, 6, raw.enqueued_at, raw.message), max_payload_bytes=100_000, max_reads=5),
        Rejected,
    )


def test_a_booking_id_is_judged_exactly_against_the_apps_key_type() -> None:
    from listener.core.events import key_problem, key_text

    assert key_problem(42, "integer") is None and key_problem(2**31, "integer") == "out of range for integer"
    assert key_problem(2**31, "bigint") is None and key_problem(2**63, "bigint") == "out of range for bigint"
    # JSON true is not 1, 42.0 is not 42, "42" is not 42
    assert key_problem(True, "integer") and key_problem(42.0, "integer") and key_problem("42", "integer")
    assert key_problem("0b6b3f1e-8d5c-4a3e-9f00-1a2b3c4d5e6f", "uuid") is None
    assert key_problem("0B6B3F1E-8D5C-4A3E-9F00-1A2B3C4D5E6F", "uuid") and key_problem(42, "uuid")
    assert key_problem("anything", "text") is None and key_problem(42, "text") == "not a string"
    # typed in: a uuid in any form PostgreSQL reads, an integer in decimal without leading zeros
    assert key_text(" {0B6B3F1E8D5C4A3E9F001A2B3C4D5E6F} ", "uuid") == "0b6b3f1e-8d5c-4a3e-9f00-1a2b3c4d5e6f"
    assert key_text("42", "integer") == "42" and key_text("nope", "integer") is None
    assert key_text("2147483648", "integer") is None and key_text("2147483648", "bigint") == "2147483648"
