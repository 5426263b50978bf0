"""Kubernetes quantities, with errors that name the field and the bad value."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rayguard_node.errors import InvalidSetting
from rayguard_node.sizing.quantity import GiB, MiB, format_bytes, parse_bytes, parse_cpus, parse_quantity


@pytest.mark.parametrize("value, expected", [
    ("4Gi", Decimal(4 * 2**30)),
    ("512M", Decimal(512_000_000)),
    ("1.5Gi", Decimal(1610612736)),
    ("100m", Decimal("0.1")),
    ("1500m", Decimal("1.5")),
    ("1e3", Decimal(1000)),
    ("1Ki", Decimal(1024)),
    ("2", Decimal(2)),
    (7, Decimal(7)),
    (2.5, Decimal("2.5")),
    ("0", Decimal(0)),
    ("-1Gi", Decimal(-(2**30))),  # a quantity may be negative; bytes and cpus may not
])
def test_parse_quantity(value, expected):
    assert parse_quantity(value, "--x") == expected


@pytest.mark.parametrize("value, expected", [
    ("4Gi", 4 * GiB),
    ("512M", 512_000_000),
    ("512Mi", 512 * MiB),
    ("1.5Gi", 1610612736),
    ("1e3", 1000),
    ("1k", 1000),
    ("1024", 1024),
    (1024, 1024),
    ("0", 0),
    ("100m", 1),    # rounded up to a whole byte
    ("1.5", 2),
    (2.5, 3),
])
def test_parse_bytes(value, expected):
    result = parse_bytes(value, "--limit-bytes")
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value, expected", [
    ("2", 2.0), ("1500m", 1.5), ("100m", 0.1), ("0.5", 0.5), (4, 4.0), ("1e3", 1000.0), ("0", 0.0),
])
def test_parse_cpus(value, expected):
    result = parse_cpus(value, "--num-cpus")
    assert result == expected and type(result) is float


NOT_A_QUANTITY = ("not a Kubernetes quantity: digits with an optional fraction, an optional leading '-'"
                  " and one suffix (Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or e<integer>), e.g. 4Gi, 512M or 2")


@pytest.mark.parametrize("parse", [parse_quantity, parse_bytes, parse_cpus])
@pytest.mark.parametrize("value, message", [
    ("lots", f"invalid RAYGUARD_LIMIT_BYTES='lots': {NOT_A_QUANTITY}"),
    ("", f"invalid RAYGUARD_LIMIT_BYTES='': {NOT_A_QUANTITY}"),
    ("4gi", f"invalid RAYGUARD_LIMIT_BYTES='4gi': {NOT_A_QUANTITY}"),
    (True, "invalid RAYGUARD_LIMIT_BYTES=True: expected a quantity such as 4Gi, 512M or 2"),
    (False, "invalid RAYGUARD_LIMIT_BYTES=False: expected a quantity such as 4Gi, 512M or 2"),
    (None, "invalid RAYGUARD_LIMIT_BYTES=None: expected a quantity such as 4Gi, 512M or 2"),
    ("Infinity", f"invalid RAYGUARD_LIMIT_BYTES='Infinity': {NOT_A_QUANTITY}"),
    (float("inf"), f"invalid RAYGUARD_LIMIT_BYTES=inf: {NOT_A_QUANTITY}"),
    ("1e400", "invalid RAYGUARD_LIMIT_BYTES='1e400': too large: a Kubernetes quantity is at most"
              " 2^63-1 (9223372036854775807, about 8Ei)"),
])
def test_garbage_names_field_and_value(parse, value, message):
    with pytest.raises(InvalidSetting) as caught:
        parse(value, "RAYGUARD_LIMIT_BYTES")
    assert caught.value.field == "RAYGUARD_LIMIT_BYTES"
    assert str(caught.value) == message


# What the API server's quantity grammar refuses (and, for rayguard, a leading '+').
@pytest.mark.parametrize("value", [
    "+4Gi", "+1", " 4Gi", "4Gi ", "4 Gi", "4Gi\n", "2_000Mi", "٤Gi", "４Gi", "4K", "4KB", "4Mb",
    "4gi", "4mi", "4ki", "1e", "1e1.5", "1e+", "1Gie3", "1.2.3", ".", "-", "--1", "1..5", "e3",
    "Gi", "0x10", "NaN", "nan", "inf", "-Infinity", "1EE", "4Gi4", f"1e{2**63}", "1e1" + "0" * 5000,
    float("nan"), float("-inf"), [4], {"a": 1},
])
def test_what_the_api_server_refuses_is_refused(value):
    with pytest.raises(InvalidSetting):
        parse_quantity(value, "--x")


@pytest.mark.parametrize("value, expected", [
    ("1.", Decimal(1)), (".5", Decimal("0.5")), ("1.G", Decimal(10**9)), ("1e-3", Decimal("0.001")),
    ("1E3", Decimal(1000)), ("1e+3", Decimal(1000)), ("5n", Decimal("0.000000005")),
    ("3u", Decimal("0.000003")), ("1E", Decimal(10**18)), ("2Ei", Decimal(2 * 2**60)),
    ("1Pi", Decimal(2**50)), ("7T", Decimal(7 * 10**12)), ("00012", Decimal(12)),
    ("1e-20", Decimal("0.000000001")),  # the API server rounds a non-zero value up to 1n
    ("0e999999999", Decimal(0)), ("-0", Decimal(0)), ("9223372036854775807", Decimal(2**63 - 1)),
    ("1e-999999999999", Decimal("0.000000001")),
])
def test_what_the_api_server_accepts_is_accepted(value, expected):
    assert parse_quantity(value, "--x") == expected


@pytest.mark.parametrize("value", ["1e400", "8Ei", "9223372036854775808", "10E", "1e19", 10**30, 1e300])
@pytest.mark.parametrize("parse", [parse_quantity, parse_bytes, parse_cpus])
def test_overflow_is_one_invalid_setting(parse, value):
    with pytest.raises(InvalidSetting) as caught:
        parse(value, "--limit-bytes")
    assert "too large" in str(caught.value)


def test_the_largest_quantity_is_usable():
    assert parse_bytes("7Ei", "--x") == 7 * 2**60
    assert parse_cpus("9223372036854775807", "--x") == float(2**63 - 1)


@pytest.mark.parametrize("parse, field", [(parse_bytes, "--limit-bytes"), (parse_cpus, "--cpus")])
@pytest.mark.parametrize("value", ["-1Gi", "-1", -5, "-100m"])
def test_negative_rejected(parse, field, value):
    with pytest.raises(InvalidSetting) as caught:
        parse(value, field)
    assert str(caught.value) == f"invalid {field}={value!r}: must not be negative"


@pytest.mark.parametrize("value, text", [
    (0, "0 B"),
    (1023, "1023 B"),
    (1024, "1 KiB"),
    (1800, "2 KiB"),
    (10 * 1024, "10 KiB"),
    (MiB, "1 MiB"),
    (75 * MiB, "75 MiB"),
    (768 * MiB, "768 MiB"),
    (1023 * MiB, "1023 MiB"),
    (GiB, "1.00 GiB"),
    (int(2.5 * GiB), "2.50 GiB"),
    (16709664768, "15.56 GiB"),
    (20 * GiB, "20.00 GiB"),
])
def test_format_bytes(value, text):
    assert format_bytes(value) == text
