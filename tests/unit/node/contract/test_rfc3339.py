"""rfc3339: the exact text of each format, 'Z' handling, and round trips through parse."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import pytest

from rayguard_node.contract import rfc3339
from rayguard_node.contract.reports import GUARD_KILL, Identity, NodeUsage, Victim, new_report

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_format_seconds_is_whole_seconds_utc_with_z() -> None:
    assert rfc3339.format_seconds(T0) == "2023-11-14T22:13:20Z"
    assert rfc3339.format_seconds(0) == "1970-01-01T00:00:00Z"
    # Fractions are dropped (truncated, never rounded up): Kubernetes wants whole seconds.
    assert rfc3339.format_seconds(T0 + 0.999) == "2023-11-14T22:13:20Z"


@pytest.mark.parametrize("text, expected", [
    ("2023-11-14T22:13:20Z", T0),
    ("2023-11-14T22:13:20.250Z", T0 + 0.25),
    ("2023-11-14T22:13:20.250000Z", T0 + 0.25),
    ("2023-11-14T22:13:20+00:00", T0),
    ("2023-11-14T23:13:20+01:00", T0),  # an offset other than Z is honoured
    ("2023-11-14T17:13:20-05:00", T0),
])
def test_parse_reads_z_offsets_and_fractions(text: str, expected: float) -> None:
    assert rfc3339.parse(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text", ["", "yesterday", "2023-13-01T00:00:00Z", "2023-11-14T22:13:20ZZ"])
def test_parse_rejects_what_is_not_a_time(text: str) -> None:
    with pytest.raises(ValueError):
        rfc3339.parse(text)


@pytest.mark.parametrize("ts", [0.0, T0, T0 + 86_399, 4_102_444_800.0])
def test_whole_seconds_round_trip(ts: float) -> None:
    text = rfc3339.format_seconds(ts)
    assert rfc3339.parse(text) == ts
    assert rfc3339.format_seconds(rfc3339.parse(text)) == text


def test_now_seconds_is_whole_seconds_and_now() -> None:
    before = int(time.time())
    stamp = rfc3339.now_seconds()
    after = time.time()
    assert SECONDS.match(stamp), stamp
    assert before <= rfc3339.parse(stamp) <= after


def test_now_millis_has_exactly_three_fraction_digits_and_z() -> None:
    before = time.time()
    stamp = rfc3339.now_millis()
    after = time.time()
    assert MILLIS.match(stamp), stamp
    assert "+00:00" not in stamp
    assert before - 0.001 <= rfc3339.parse(stamp) <= after
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert parsed.tzinfo == timezone.utc
    # Milliseconds survive a round trip: format the parsed instant the same way again.
    again = datetime.fromtimestamp(rfc3339.parse(stamp), timezone.utc)
    assert again.isoformat(timespec="milliseconds").replace("+00:00", "Z") == stamp


def test_millis_and_seconds_agree_on_the_second() -> None:
    stamp = rfc3339.now_millis()
    assert rfc3339.format_seconds(rfc3339.parse(stamp)) == stamp[:19] + "Z"


def test_reports_use_the_millisecond_format() -> None:
    report = new_report(GUARD_KILL, Identity(), Victim(1, "x"), NodeUsage(1, 2, 0.5, 0.9))
    assert MILLIS.match(report.time), report.time
