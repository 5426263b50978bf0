"""spec.memory.quota: how the runtimes enforce actors' `memory=` quotas (cluster-wide)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from rayguard_node.contract.reports import ENFORCEMENTS, KILL

from rayguard_operator.errors import SpecError

QUOTA_FIELDS = {"enforcement", "tolerance", "graceSeconds"}
MAX_TOLERANCE = 100.0
MAX_GRACE_SECONDS = 3600


@dataclass(frozen=True)
class QuotaSpec:
    enforcement: str = KILL
    tolerance: float = 1.2
    grace_seconds: float = 5.0


def parse_quota(data: Any, path: str = "spec.memory.quota") -> QuotaSpec:
    if data is None:
        return QuotaSpec()
    if not isinstance(data, Mapping):
        raise SpecError(path, f"expected an object, found {type(data).__name__}")
    for key in data:
        if key not in QUOTA_FIELDS:
            raise SpecError(f"{path}.{key}", f"unknown field; known: {', '.join(sorted(QUOTA_FIELDS))}")
    enforcement = data.get("enforcement", KILL)
    if enforcement not in ENFORCEMENTS:
        raise SpecError(f"{path}.enforcement", f"must be one of {', '.join(ENFORCEMENTS)}, found {enforcement!r}")
    tolerance = data.get("tolerance", 1.2)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
            or not math.isfinite(tolerance) or not 1 <= tolerance <= MAX_TOLERANCE:
        raise SpecError(f"{path}.tolerance", f"must be a number from 1 to {MAX_TOLERANCE:g}, found {tolerance!r}")
    grace = data.get("graceSeconds", 5)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) \
            or not math.isfinite(grace) or not 0 <= grace <= MAX_GRACE_SECONDS:
        raise SpecError(f"{path}.graceSeconds", f"must be from 0 to {MAX_GRACE_SECONDS} seconds, found {grace!r}")
    return QuotaSpec(str(enforcement), float(tolerance), float(grace))
