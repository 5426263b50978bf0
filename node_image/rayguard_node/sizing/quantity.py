"""Kubernetes quantities (`4Gi`, `512M`, `100m`) with errors that name the field."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

from kubernetes.utils import parse_quantity as _k8s_parse_quantity

from rayguard_node.errors import InvalidSetting

GiB = 1024**3
MiB = 1024**2


def parse_quantity(value: object, field: str) -> Decimal:
    """Parse a quantity with the Kubernetes client's own parser."""
    if isinstance(value, bool):
        raise InvalidSetting(field, value, "expected a quantity such as 4Gi, 512M or 2")
    try:
        parsed = _k8s_parse_quantity(value)
    except (ValueError, TypeError, InvalidOperation) as error:
        raise InvalidSetting(
            field, value, f"not a Kubernetes quantity ({error}); use e.g. 4Gi, 512M or 2"
        ) from None
    if not parsed.is_finite():
        raise InvalidSetting(field, value, "must be a finite quantity")
    return parsed


def parse_bytes(value: object, field: str) -> int:
    """A memory quantity in whole bytes (rounded up, as the kubelet does)."""
    parsed = parse_quantity(value, field)
    if parsed < 0:
        raise InvalidSetting(field, value, "must not be negative")
    return int(math.ceil(parsed))


def parse_cpus(value: object, field: str) -> float:
    """A CPU quantity (`2`, `1500m`) as a float number of cores."""
    parsed = parse_quantity(value, field)
    if parsed < 0:
        raise InvalidSetting(field, value, "must not be negative")
    return float(parsed)


def format_bytes(value: int) -> str:
    """Human-readable binary size for tables and messages: 2.50 GiB, 768 MiB."""
    if value >= GiB:
        return f"{value / GiB:.2f} GiB"
    if value >= MiB:
        return f"{value / MiB:.0f} MiB"
    if value >= 1024:
        return f"{value / 1024:.0f} KiB"
    return f"{value} B"
