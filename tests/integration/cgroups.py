"""Real cgroup v1 memory cgroups for integration tests, always removed afterwards."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from rayguard_node.cgroup.scratch import MemoryCgroup, why_not_writable, writable_v1_parent


@pytest.fixture
def make_cgroup() -> Iterator[Callable[..., MemoryCgroup]]:
    """Factory: `make_cgroup(limit_bytes)` makes a child of this process's cgroup.

    Skips with the reason when this machine has no writable v1 memory controller.
    Every cgroup made is removed at teardown, processes inside killed first, even when
    the test failed.
    """
    parent = writable_v1_parent()
    if parent is None:
        pytest.skip(f"needs a writable cgroup v1 memory controller: {why_not_writable()}")
    made: list[MemoryCgroup] = []

    def factory(limit_bytes: int | None = None, prefix: str = "rayguard-test") -> MemoryCgroup:
        cgroup = MemoryCgroup.create(parent, prefix, limit_bytes)
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
