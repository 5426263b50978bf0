"""Heap quota enforcement for actors: an actor that stays over its `memory=` quota is stopped.

Ray schedules by `memory=` but does not enforce it. rayguard does, for actors only (as Ray's
documents describe it): an actor whose RSS − SHR stays above quota × tolerance for the grace
period is killed (`Kill`) or reported (`Warn`), once per episode. Never a task, a system
process or the driver (only `WORKER` processes that the actor directory names are considered),
never an actor without a quota, and never one whose memory is mostly shared: object store
mappings count in SHR, and a process that mostly maps shared pages is not what a heap quota is
about.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import Callable, Mapping

from rayguard_node.cgroup.processes import WORKER, ProcessMemory
from rayguard_node.contract.reports import KILL, OFF, WARN, QuotaBreach

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuotaSettings:
    enforcement: str = KILL
    tolerance: float = 1.2
    grace_s: float = 5.0

    @property
    def enabled(self) -> bool:
        return self.enforcement != OFF


@dataclass(frozen=True)
class ActorQuota:
    """One live actor on this node, as Ray's state API lists it."""

    pid: int
    actor_id: str
    class_name: str
    name: str
    quota_bytes: int


@dataclass(frozen=True)
class QuotaAction:
    process: ProcessMemory
    breach: QuotaBreach


def title_matches(process: ProcessMemory, actor: ActorQuota) -> bool:
    """The pid is still that actor's worker: `ray::Class` or `ray::Class.method` (a pid the
    listing named a moment ago may already belong to another process)."""
    title = process.name.split(" ", 1)[0]
    return title == f"ray::{actor.class_name}" or title.startswith(f"ray::{actor.class_name}.")


class QuotaEnforcer:
    """Decides, from each process scan, which actors are over quota for long enough."""

    def __init__(self, settings: QuotaSettings,
                 kill: Callable[[int, int], None] = os.kill) -> None:
        self.settings = settings
        self.kill = kill
        self._over_since: dict[int, float] = {}
        self._acted: set[int] = set()  # pids reported in this episode (Warn) or killed
        self._warned_shared: set[int] = set()

    def check(self, processes: list[ProcessMemory], actors: Mapping[int, ActorQuota],
              now: float) -> list[QuotaAction]:
        if not self.settings.enabled:
            return []
        actions: list[QuotaAction] = []
        seen: set[int] = set()
        for process in processes:
            actor = actors.get(process.pid)
            if actor is None or actor.quota_bytes <= 0 or process.process_class != WORKER:
                continue
            if not title_matches(process, actor):
                continue
            seen.add(process.pid)
            used = process.rss_minus_shr_bytes
            if used <= actor.quota_bytes * self.settings.tolerance:
                self._over_since.pop(process.pid, None)
                self._acted.discard(process.pid)  # back under: a new episode may follow
                continue
            if process.shared_bytes > used:
                if process.pid not in self._warned_shared:
                    self._warned_shared.add(process.pid)
                    log.info("actor %s (pid %d) is over its quota but its memory is mostly shared;"
                             " left alone", actor.class_name, process.pid)
                continue
            since = self._over_since.setdefault(process.pid, now)
            if now - since < self.settings.grace_s or process.pid in self._acted:
                continue
            action = self._act(process, actor, used, now - since)
            if action is not None:
                actions.append(action)
        for gone in set(self._over_since) - seen:  # exited or no longer an actor with a quota
            del self._over_since[gone]
        self._acted &= seen
        self._warned_shared &= seen
        return actions

    def _act(self, process: ProcessMemory, actor: ActorQuota, used: int,
             over_s: float) -> QuotaAction | None:
        enforcement = self.settings.enforcement
        if enforcement == KILL:
            try:
                self.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                return None  # it ended on its own
        self._acted.add(process.pid)
        breach = QuotaBreach(actor.class_name, actor.name, actor.actor_id, actor.quota_bytes, used,
                             self.settings.tolerance, over_s, KILL if enforcement == KILL else WARN)
        return QuotaAction(process, breach)
