"""Making our own cgroup v2 a parent that may hold memory-limited children.

cgroup v2 has two rules that v1 does not:

- a cgroup's children get the memory controller only when the cgroup lists it in
  `cgroup.subtree_control`;
- a cgroup (other than the root) that enables a controller for its children may hold no
  processes itself ("no internal processes").

So before local mode, a test or a benchmark can create memory cgroups under its own cgroup,
the processes in that cgroup move to a leaf child (`rayguard-leaf`), and the memory controller
is enabled. `undo` restores what was there: the controller off again (when we turned it on)
and the processes back. Every path comes from the caller, so fake trees can stand in.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rayguard_node.cgroup.processes import read_procs
from rayguard_node.cgroup.reading import read_optional

log = logging.getLogger(__name__)

LEAF_NAME = "rayguard-leaf"
ENABLE_TRIES = 20  # a process may be born into the cgroup between the move and the enable


@dataclass(frozen=True)
class Delegation:
    """What `delegate` changed, so that `undo` can put it back."""

    directory: Path
    leaf: Path | None  # where our cgroup's processes went; None when none had to move
    enabled_memory: bool  # we wrote +memory (it was not on before)


def words(path: Path) -> list[str]:
    return (read_optional(path) or "").split()


def is_root(directory: Path) -> bool:
    """The true root cgroup has no `cgroup.type` (a namespace's root has one)."""
    return not (directory / "cgroup.type").exists()


def why_not_delegable(directory: Path) -> str | None:
    """None if `delegate` can work here; else why not, in words."""
    if "memory" not in words(directory / "cgroup.controllers"):
        return f"the memory controller is not available in {directory} (cgroup.controllers)"
    if not os.access(directory / "cgroup.subtree_control", os.W_OK) or not os.access(directory, os.W_OK):
        return f"the cgroup {directory} is not writable (run as root)"
    return None


def move_pids(pids: list[int], target: Path) -> None:
    for pid in pids:
        try:
            (target / "cgroup.procs").write_text(str(pid))
        except ProcessLookupError:
            continue  # it exited meanwhile
        except OSError as error:
            if error.errno != errno.ESRCH:
                raise


def delegate(directory: Path) -> Delegation:
    """Enable the memory controller for `directory`'s children, moving its processes to a
    leaf first where the no-internal-processes rule asks for it."""
    if "memory" in words(directory / "cgroup.subtree_control"):
        return Delegation(directory, None, False)
    leaf: Path | None = None
    for attempt in range(ENABLE_TRIES):
        if not is_root(directory):
            pids = read_procs(directory / "cgroup.procs")
            if pids:
                leaf = directory / LEAF_NAME
                leaf.mkdir(exist_ok=True)
                move_pids(pids, leaf)
        try:
            (directory / "cgroup.subtree_control").write_text("+memory")
            return Delegation(directory, leaf, True)
        except OSError as error:
            if error.errno != errno.EBUSY or attempt == ENABLE_TRIES - 1:
                if leaf is not None:
                    undo(Delegation(directory, leaf, False))
                raise
            time.sleep(0.01)
    raise AssertionError("unreachable")


def undo(delegation: Delegation) -> None:
    """Put back what `delegate` changed. Scratch children must already be gone."""
    if delegation.enabled_memory:
        try:
            (delegation.directory / "cgroup.subtree_control").write_text("-memory")
        except OSError as error:  # a child someone else made still uses it: leave it on
            log.warning("could not turn the memory controller off again in %s: %s",
                        delegation.directory, error)
            return
    if delegation.leaf is None:
        return
    move_pids(read_procs(delegation.leaf / "cgroup.procs"), delegation.directory)
    try:
        delegation.leaf.rmdir()
    except OSError as error:
        log.warning("could not remove %s: %s", delegation.leaf, error)
