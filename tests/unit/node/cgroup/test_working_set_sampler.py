"""The guard's cheap sample: exact near the threshold, a recent inactive-file far below it."""

from __future__ import annotations

from rayguard_node.cgroup.files import UsageReader, WorkingSetSampler
from rayguard_node.cgroup.paths import V1

MiB = 1024**2


def write(directory, usage, inactive):
    (directory / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (directory / "memory.stat").write_text(f"cache 1\ntotal_inactive_file {inactive}\n")


def test_far_below_uses_a_recent_inactive_figure_and_near_reads_both(tmp_path):
    write(tmp_path, 100 * MiB, 10 * MiB)
    sampler = WorkingSetSampler(UsageReader(tmp_path, V1), exact_above_bytes=500 * MiB, stat_every=5)
    assert sampler.read() == (100 * MiB, 90 * MiB)  # first sample reads both files
    write(tmp_path, 200 * MiB, 50 * MiB)
    assert sampler.read() == (200 * MiB, 190 * MiB)  # usage fresh, inactive from before
    write(tmp_path, 600 * MiB, 50 * MiB)
    assert sampler.read() == (600 * MiB, 550 * MiB)  # above exact_above: both files again


def test_stat_is_refreshed_every_nth_sample(tmp_path):
    write(tmp_path, 100 * MiB, 10 * MiB)
    sampler = WorkingSetSampler(UsageReader(tmp_path, V1), exact_above_bytes=500 * MiB, stat_every=3)
    sampler.read()
    write(tmp_path, 100 * MiB, 40 * MiB)
    assert [sampler.read()[1] for _ in range(3)] == [90 * MiB, 60 * MiB, 60 * MiB]
