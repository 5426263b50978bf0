"""The live view: what each node's runtime writes every second, and `rayguard top` reads.

Keys in the head Redis (docs/ledger.md):

- `rayguard:live:nodes`: a hash, field = pod name, value = one `LiveNode` as JSON. A node's
  field is overwritten every second; the head's runtime deletes fields not written for
  `FORGET_AFTER_MS` (pods that are gone).
- `rayguard:live:pod:<pod>`: a sorted set, scored by RSS − SHR, member = one `LiveRow` as
  JSON, for the node's task and actor workers. Replaced atomically every second (DEL, ZADD,
  EXPIRE `ROWS_TTL_S` in one MULTI), so rows of processes that are gone vanish at once, and
  the whole key when its node stops writing. (The `pod:` part keeps a pod named `nodes`
  from colliding with the hash.)

A reader asks for the hash and, per node, the top N members (`ZREVRANGE key 0 N-1
WITHSCORES`): O(nodes + rows shown), however many samples the ledger holds. Times are
milliseconds since the epoch from the writer's clock; readers compare them with Redis's
`TIME`, which is on the cluster's side as the writers are.

Both sides share this module: the runtime encodes with `to_json`, `rayguard top` decodes with
`from_json`, which refuses (`MalformedLive`) anything that is not the shape below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

NODES_KEY = "rayguard:live:nodes"
ROWS_PREFIX = "rayguard:live:pod:"
ROWS_TTL_S = 30
WRITE_PERIOD_S = 1.0
STALE_AFTER_MS = 5_000  # a node this late is shown as stale
HIDE_AFTER_MS = ROWS_TTL_S * 1000  # ... and not at all past its rows' TTL
FORGET_AFTER_MS = 10 * 60 * 1000  # the head deletes its field then
MAX_ROWS_PER_NODE = 2_000  # the largest ones, when a node runs more workers than that


class MalformedLive(ValueError):
    """A live-view entry that is not what this module writes."""


def rows_key(pod: str) -> str:
    return ROWS_PREFIX + pod


def _int(data: dict[str, Any], key: str, optional: bool = False) -> int | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedLive(f"{key} must be a whole number >= 0, not {value!r}")
    return value


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise MalformedLive(f"{key} must be a string, not {value!r}")
    return value


def _object(raw: bytes | str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedLive(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise MalformedLive("not a JSON object")
    return data


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class LiveNode:
    """One node's memory at `time_ms`: its limit, working set and the threshold that applies."""

    pod: str
    group: str
    role: str
    limit_bytes: int
    working_set_bytes: int
    threshold: float  # of the limit: the guard's, or Ray's monitor's when the guard is off
    time_ms: int
    rows: int = 0  # members in its sorted set

    @property
    def threshold_bytes(self) -> int:
        return int(self.threshold * self.limit_bytes)

    @property
    def headroom_bytes(self) -> int:
        """Bytes left before the threshold; negative past it."""
        return self.threshold_bytes - self.working_set_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"pod": self.pod, "group": self.group, "role": self.role,
                "limit_bytes": self.limit_bytes, "working_set_bytes": self.working_set_bytes,
                "threshold": self.threshold, "time_ms": self.time_ms, "rows": self.rows}

    def to_json(self) -> str:
        return _dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes | str) -> "LiveNode":
        data = _object(raw)
        threshold = data.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise MalformedLive(f"threshold must be a fraction in (0, 1], not {threshold!r}")
        rows = data.get("rows", 0)
        return cls(_str(data, "pod"), _str(data, "group"), _str(data, "role"),
                   _int(data, "limit_bytes"), _int(data, "working_set_bytes"),  # type: ignore[arg-type]
                   float(threshold), _int(data, "time_ms"),  # type: ignore[arg-type]
                   _int({"rows": rows}, "rows"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class LiveRow:
    """One task or actor worker: its memory now, its quota (actors with `memory=`), its peak."""

    pid: int
    name: str
    process_class: str
    rss_minus_shr_bytes: int
    quota_bytes: int | None
    peak_bytes: int
    age_s: int

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "name": self.name, "class": self.process_class,
                "rss_minus_shr_bytes": self.rss_minus_shr_bytes, "quota_bytes": self.quota_bytes,
                "peak_bytes": self.peak_bytes, "age_s": self.age_s}

    def to_json(self) -> str:
        return _dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes | str) -> "LiveRow":
        data = _object(raw)
        return cls(_int(data, "pid"), _str(data, "name"), _str(data, "class"),  # type: ignore[arg-type]
                   _int(data, "rss_minus_shr_bytes"), _int(data, "quota_bytes", optional=True),  # type: ignore[arg-type]
                   _int(data, "peak_bytes"), _int(data, "age_s"))  # type: ignore[arg-type]
