"""The retry policies (reconnects, batches in hand) and the one-line error summary."""

from __future__ import annotations

import random

import psycopg
import pytest

from listener.core.backoff import Backoff, BatchRetry, ReconnectBackoff
from listener.errors import first_line


def test_delays_grow_jittered_up_to_the_cap_and_start_over_after_reset() -> None:
    backoff = Backoff(first_s=0.1, factor=2, cap_s=4.0, jitter=0.2, rng=random.Random(7))
    delays = [backoff.next() for _ in range(12)]
    assert 0.08 <= delays[0] <= 0.12
    assert 0.16 <= delays[1] <= 0.24
    assert all(d <= 4.0 for d in delays)
    assert all(d >= 3.2 for d in delays[7:])  # at the cap, still jittered downwards only
    assert len(set(delays[7:])) > 1  # jittered: listeners that lost one server do not retry in step
    backoff.reset()
    assert 0.08 <= backoff.next() <= 0.12


def test_reconnect_policy_resumes_within_five_seconds_of_the_server_returning() -> None:
    backoff = ReconnectBackoff()
    delays = [backoff.next() for _ in range(50)]
    assert 0.08 <= delays[0] <= 0.12
    assert max(delays) < 5.0


def test_a_batch_in_hand_is_given_back_to_its_visibility_timeout_within_seconds() -> None:
    backoff = BatchRetry()
    # Between its attempts: what the batch's messages stay hidden for, on top of the calls themselves.
    waited = sum(backoff.next() for _ in range(BatchRetry.ATTEMPTS - 1))
    assert 0.04 <= BatchRetry().next() <= 0.06
    assert waited < 3.0


@pytest.mark.parametrize(
    ("first_s", "factor", "cap_s", "jitter"),
    [(0, 2, 1, 0.1), (2, 2, 1, 0.1), (0.1, 0.5, 1, 0.1), (0.1, 2, 1, 1.0)],
)
def test_a_policy_that_cannot_work_is_refused(
    first_s: float, factor: float, cap_s: float, jitter: float
) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(first_s=first_s, factor=factor, cap_s=cap_s, jitter=jitter)


def test_first_line_gives_the_sqlstate_and_the_first_line_of_a_real_server_error(ledger_dsn: str) -> None:
    with psycopg.connect(ledger_dsn) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT 1/0")
    assert first_line(caught.value) == "22012: division by zero"


def test_first_line_of_an_error_without_sqlstate_or_text() -> None:
    assert first_line(RuntimeError("\n  lost the server  \nDETAIL: more\n")) == "lost the server"
    assert first_line(RuntimeError()) == "RuntimeError"
