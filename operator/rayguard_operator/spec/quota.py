"""spec.memory.quota: how the runtimes enforce actors' `memory=` quotas (cluster-wide)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rayguard_node.contract.reports import ENFORCEMENTS, KILL

from rayguard_operator.errors import SpecError
from rayguard_operator.spec.fields import known_object, one_of

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
    known_object(data, path, QUOTA_FIELDS)
    enforcement = data.get("enforcement", KILL)
    one_of(enforcement, f"{path}.enforcement", ENFORCEMENTS)
    tolerance = data.get("tolerance", 1.2)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
            or not math.isfinite(tolerance) or not 1 <= tolerance <= MAX_TOLERANCE:
        raise SpecError(f"{path}.tolerance", f"must be a number from 1 to {MAX_TOLERANCE:g}, found {tolerance!r}")
    grace = data.get("graceSeconds", 5)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) \
            or not math.isfinite(grace) or not 0 <= grace <= MAX_GRACE_SECONDS:
        raise SpecError(f"{path}.graceSeconds", f"must be from 0 to {MAX_GRACE_SECONDS} seconds, found {grace!r}")
    return QuotaSpec(str(enforcement), float(tolerance), float(grace))
