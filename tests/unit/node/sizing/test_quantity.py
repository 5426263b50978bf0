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


@pytest.mark.parametrize("parse", [parse_quantity, parse_bytes, parse_cpus])
@pytest.mark.parametrize("value, message", [
    ("lots", "invalid RAYGUARD_LIMIT_BYTES='lots': not a Kubernetes quantity"
             " (Invalid number format: lots); use e.g. 4Gi, 512M or 2"),
    ("", "invalid RAYGUARD_LIMIT_BYTES='': not a Kubernetes quantity"
         " (Invalid number format: ); use e.g. 4Gi, 512M or 2"),
    ("4gi", "invalid RAYGUARD_LIMIT_BYTES='4gi': not a Kubernetes quantity"
            " (Invalid number format: 4gi); use e.g. 4Gi, 512M or 2"),
    (True, "invalid RAYGUARD_LIMIT_BYTES=True: expected a quantity such as 4Gi, 512M or 2"),
    (False, "invalid RAYGUARD_LIMIT_BYTES=False: expected a quantity such as 4Gi, 512M or 2"),
    ("Infinity", "invalid RAYGUARD_LIMIT_BYTES='Infinity': must be a finite quantity"),
])
def test_garbage_names_field_and_value(parse, value, message):
    with pytest.raises(InvalidSetting) as caught:
        parse(value, "RAYGUARD_LIMIT_BYTES")
    assert caught.value.field == "RAYGUARD_LIMIT_BYTES"
    assert str(caught.value) == message


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
