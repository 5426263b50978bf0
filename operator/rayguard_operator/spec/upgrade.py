"""spec.upgradeStrategy: how pods whose template is out of date are replaced, and whether the
head may be (with spec.gcsFaultTolerance, `spec/gcs.py`). The reconciler's rollout step (`reconcile/rollout.py`)
acts on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayguard_operator.spec.fields import known_object, one_of

ROLLING_UPDATE, RECREATE, NONE = "RollingUpdate", "Recreate", "None"
STRATEGY_TYPES = (ROLLING_UPDATE, RECREATE, NONE)
UPGRADE_STRATEGY_FIELDS = {"type"}


@dataclass(frozen=True)
class UpgradeStrategy:
    """RollingUpdate: outdated workers one at a time, the head last and only with GCS fault
    tolerance. Recreate: every outdated pod at once, the head included. None: never for a
    template change; only missing or dead pods are created."""

    type: str = ROLLING_UPDATE


def parse_upgrade_strategy(data: Any, path: str = "spec.upgradeStrategy") -> UpgradeStrategy:
    if data is None:
        return UpgradeStrategy()
    known_object(data, path, UPGRADE_STRATEGY_FIELDS)
    kind = data.get("type")
    if kind is None:
        return UpgradeStrategy()
    one_of(kind, f"{path}.type", STRATEGY_TYPES)
    return UpgradeStrategy(str(kind))

