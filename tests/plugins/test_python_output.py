"""The stub's log channel: what the server makes of each line a stub writes."""

from __future__ import annotations

import logging

import pytest
from repoman_python.output import MARK, parse


@pytest.mark.parametrize(
    ("line", "level", "message"),
    [
        ("plain text", logging.WARNING, "plain text"),
        (MARK + '{"level": 20, "message": "hello"}', logging.INFO, "hello"),
        (MARK + '{"level": 40, "message": "m", "exception": "Tb"}', logging.ERROR, "m\nTb"),
        (MARK + '{"level": 99, "message": "loud"}', logging.CRITICAL, "loud"),
        (MARK + '{"level": -3, "message": "quiet"}', logging.DEBUG, "quiet"),
        (MARK + "not json", logging.WARNING, MARK + "not json"),
        (MARK + '{"message": "no level"}', logging.WARNING, MARK + '{"message": "no level"}'),
        (MARK + '{"level": "high", "message": "x"}', logging.WARNING, None),
    ],
    ids=[
        "plain",
        "record",
        "exception",
        "too high",
        "too low",
        "bad json",
        "no level",
        "bad level",
    ],
)
def test_a_line_is_a_marked_record_or_plain_text(line, level, message):
    got_level, got_message = parse(line, logging.WARNING)
    assert got_level == level
    assert got_message == (line if message is None else message)
