"""Real memory cgroups (v1 or v2, whichever this host can write) for integration tests,
always removed afterwards."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from rayguard_node.cgroup.scratch import MemoryCgroup, ScratchParent, open_scratch_parent, why_not_writable


@pytest.fixture(scope="session")
def scratch_parent() -> Iterator[ScratchParent]:
    """Where test cgroups go, for the whole session. On cgroup v2 the session's own cgroup is
    made a delegating parent (its processes move to a leaf), and put back at the end.

    Skips with the reason when this host has no writable memory controller, v1 or v2.
    """
    try:
        parent = open_scratch_parent()
    except OSError as error:
        pytest.skip(f"needs a writable memory cgroup: {error}")
    if parent is None:
        pytest.skip(f"needs a writable memory cgroup (v1 or v2): {why_not_writable()}")
    with parent:
        yield parent


@pytest.fixture
def make_cgroup(scratch_parent: ScratchParent) -> Iterator[Callable[..., MemoryCgroup]]:
    """Factory: `make_cgroup(limit_bytes)` makes a child of the scratch parent.

    Every cgroup made is removed at teardown, processes inside killed first, even when
    the test failed.
    """
    made: list[MemoryCgroup] = []

    def factory(limit_bytes: int | None = None, prefix: str = "rayguard-test") -> MemoryCgroup:
        cgroup = scratch_parent.create(prefix, limit_bytes)
        made.append(cgroup)
        return cgroup

    yield factory
    errors = []
    for cgroup in reversed(made):
        try:
            cgroup.remove()
        except OSError as error:  # report, but keep removing the others
            errors.append(f"{cgroup.directory}: {error}")
    assert not errors, f"could not remove cgroups: {errors}"
