"""Text logs: one record per line, every line stamped; no None or Python reprs in an outcome line."""

from __future__ import annotations

import io
import logging
import re

from listener.core.store import Outcome
from listener.core.worker import outcome_line
from listener.logs import LineFormatter

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) listener: ")


def test_every_line_of_a_multi_line_record_is_stamped() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter())
    log = logging.getLogger("listener")
    log.addHandler(handler)
    try:
        log.warning("batch of 2: paid=2\nbooking=a outcome=paid\nbooking=b outcome=paid")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) > 4
    assert all(STAMP.match(line) for line in lines), lines


def test_an_outcome_line_leaves_out_what_is_not_known() -> None:
    dead = Outcome(
        None, "dead-lettered", None, None, "read 11 times without being handled", msg_id=5, dead_letter_id=2
    )
    assert outcome_line(dead) == (
        'outcome=dead-lettered message=5 dead_letter=2 reason="read 11 times without being handled"'
    )
    paid = Outcome("b1", "paid", "p1", None, None, by_role="authenticated", by_uid="u1", trace="00-aa-bb-01")
    assert outcome_line(paid) == "booking=b1 pack=p1 outcome=paid by=authenticated uid=u1 trace=00-aa-bb-01"
    assert "None" not in outcome_line(dead) + outcome_line(paid)
