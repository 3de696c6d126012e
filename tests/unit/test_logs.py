"""Logs: in text one record per line, every line stamped, no None or Python reprs in an outcome line;
in JSON a line per booking with its fields."""

from __future__ import annotations

import io
import json
import logging
import re

from listener.core.store import Outcome
from listener.core.worker import outcome_fields, outcome_line
from listener.logs import FIELDS, ITEMS, JsonFormatter, LineFormatter

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


def _json_lines(record_args: dict[str, object], msg: str, *args: object) -> list[dict[str, object]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("listener.test_json")
    log.addHandler(handler)
    try:
        log.warning(msg, *args, extra=record_args)
    finally:
        log.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_batch_in_json_is_a_line_for_the_batch_and_an_object_per_booking() -> None:
    paid = Outcome("b1", "paid", "p1", None, None, by_role="authenticated")
    unfunded = Outcome("b2", "unfunded", None, None, "no pack with sessions left")
    lines = _json_lines(
        {ITEMS: [outcome_fields(paid), outcome_fields(unfunded)], FIELDS: {"batch_size": 2}},
        "batch of %d: %s",
        2,
        "paid=1 unfunded=1",
    )
    assert len(lines) == 3
    batch, first, second = lines
    assert batch["msg"] == "batch of 2: paid=1 unfunded=1" and batch["batch_size"] == 2
    assert first["msg"] == "booking paid" and second["msg"] == "booking unfunded"
    assert {k: first[k] for k in ("booking_id", "outcome", "purchase_id", "reason", "by_role")} == {
        "booking_id": "b1",
        "outcome": "paid",
        "purchase_id": "p1",
        "reason": None,
        "by_role": "authenticated",
    }
    assert (second["booking_id"], second["outcome"], second["purchase_id"], second["reason"]) == (
        "b2",
        "unfunded",
        None,
        "no pack with sessions left",
    )
    assert all(line["ts"] == batch["ts"] and line["level"] == "warning" for line in lines)
    assert "dead_letter_id" not in first


def test_a_batch_in_text_keeps_a_stamped_key_value_line_per_booking() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter())
    log = logging.getLogger("listener")
    log.addHandler(handler)
    try:
        log.warning(
            "batch of 1: paid=1", extra={ITEMS: [outcome_fields(Outcome("b1", "paid", "p1", None, None))]}
        )
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(STAMP.match(line) for line in lines)
    assert lines[1].endswith("listener: booking=b1 pack=p1 outcome=paid")
