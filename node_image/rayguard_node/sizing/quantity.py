"""Kubernetes quantities (`4Gi`, `512M`, `100m`) with errors that name the field.

The grammar is the API server's (`k8s.io/apimachinery/pkg/api/resource`, `ParseQuantity`):

    quantity  ::= ["-"] number [suffix]
    number    ::= digits ["." [digits]] | "." digits        (ASCII digits 0-9)
    suffix    ::= Ki | Mi | Gi | Ti | Pi | Ei               (binary, 2^10 ... 2^60)
                | n | u | m | k | M | G | T | P | E          (decimal, 10^-9 ... 10^18)
                | (e | E) ["+" | "-"] digits                 (10^integer, the integer an int64)

Two deliberate differences: a leading `+`, which the API server takes, is refused (nothing
rayguard reads is signed), and so is a value above 2^63-1 (about 8Ei), which the API server
would store or cap but no byte count or CPU count can be. Like the API server, a non-zero
value is rounded up to a whole nano (`1e-20` is `1n`). No spaces, `_` separators, other
scripts' digits, `K`, `nan` or `inf`: Python's `Decimal` takes several of those, the API
server none of them.
"""

from __future__ import annotations

import math
import re
from decimal import MAX_EMAX, MIN_EMIN, ROUND_UP, Context, Decimal

from rayguard_node.errors import InvalidSetting

GiB = 1024**3
MiB = 1024**2
MAX_QUANTITY = 2**63 - 1
_NANO = Decimal("1e-9")
_INT64_MAX = 2**63 - 1

_QUANTITY = re.compile(r"(-?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][-+]?[0-9]+)?")
_BINARY_BITS = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_EXPONENT = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

EXAMPLE = "e.g. 4Gi, 512M or 2"
NOT_A_QUANTITY = ("not a Kubernetes quantity: digits with an optional fraction, an optional leading '-'"
                  f" and one suffix (Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or e<integer>), {EXAMPLE}")
TOO_LARGE = f"too large: a Kubernetes quantity is at most 2^63-1 ({MAX_QUANTITY}, about 8Ei)"


def parse_quantity(value: object, field: str) -> Decimal:
    """A quantity as an exact Decimal; strings follow the grammar above, YAML and JSON
    numbers are read as their text."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise InvalidSetting(field, value, "expected a quantity such as 4Gi, 512M or 2")
    match = _QUANTITY.fullmatch(value if isinstance(value, str) else str(value))
    if match is None:
        raise InvalidSetting(field, value, NOT_A_QUANTITY)
    sign, number, suffix = match.groups()
    mantissa = Decimal(number)  # exact: Decimal(str) applies no context
    exponent, bits = 0, 0
    if suffix in _BINARY_BITS:
        bits = _BINARY_BITS[suffix]
    elif suffix in _DECIMAL_EXPONENT:
        exponent = _DECIMAL_EXPONENT[suffix]
    elif suffix:
        digits = suffix[1:].lstrip("+-").lstrip("0")
        exponent = (-1 if suffix[1:2] == "-" else 1) * (int(digits or "0") if len(digits) <= 19
                                                        else _INT64_MAX + 2)
        if not -_INT64_MAX - 1 <= exponent <= _INT64_MAX:  # the API server parses it as an int64
            raise InvalidSetting(field, value, NOT_A_QUANTITY)
    if mantissa == 0:
        return Decimal(0)
    magnitude = mantissa.adjusted() + exponent  # value is in [10^magnitude, 10^(magnitude+1))
    if magnitude + bits * 0.302 > 19:  # at least 10^19 > 2^63 - 1
        raise InvalidSetting(field, value, TOO_LARGE)
    if magnitude < -10:  # below 1n: the API server rounds it up to 1n
        scaled = _NANO
    else:
        context = Context(prec=len(number) + 60, Emin=MIN_EMIN, Emax=MAX_EMAX)
        scaled = context.multiply(mantissa.scaleb(exponent, context), Decimal(2**bits))
        scaled = scaled.quantize(_NANO, rounding=ROUND_UP, context=context)
    if scaled > MAX_QUANTITY:
        raise InvalidSetting(field, value, TOO_LARGE)
    return -scaled if sign else scaled


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
