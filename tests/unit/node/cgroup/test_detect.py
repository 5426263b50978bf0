"""Memory detection on the fake procfs/sysfs trees under tests/data/cgroup.

Every expected number below is read off the tree's files by hand (see tests/data/README.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rayguard_node.cgroup.files import NodeSampler, UsageReader
from rayguard_node.cgroup.paths import V1, V2, locate_controller
from rayguard_node.cgroup.detect import detect
from rayguard_node.errors import CgroupFormatError
from tests.paths import DATA_DIR

TREES = DATA_DIR / "cgroup"
KiB, MiB, GiB = 1024, 1024**2, 1024**3
HOST = 16318032 * KiB  # MemTotal of every tree
V1_SENTINEL = "9223372036854771712"


def run_detect(directory: Path, shm: Path):
    return detect(sysfs_root=directory / "sys", procfs_root=directory / "proc", shm_path=shm)


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


# tree, source, cgroup_path, limit, limited_by, usage, working_set, oom_kills, cpus,
# ray_limit, ray_sees_limit
DETECTION_TABLE = [
    ("v2_namespace", "cgroup2", "/", 1 * GiB, "/",
     314572800, 314572800 - 62914560, 2, 1.5, 1 * GiB, True),
    ("v2_nested", "cgroup2", "/kubepods.slice/pod1/ctr", 2 * GiB, "/kubepods.slice/pod1",
     524288000, 524288000 - 104857600, 1, 2.0, HOST, False),
    ("v2_unlimited", "host", "/user.slice/session-1.scope", HOST, "host",
     104857600, 104857600, 0, None, HOST, True),
    ("v1_memory_alone", "cgroup1", "/docker/abc", 512 * MiB, "/docker/abc",
     209715200, 209715200 - 31457280, 4, 2.0, HOST, False),
    ("v1_nested", "cgroup1", "/kubepods/pod1/ctr", 3 * GiB, "/kubepods/pod1",
     1073741824, 1073741824 - 104857600, 1, None, HOST, False),
    ("hybrid", "cgroup1", "/system.slice/app.service", 1 * GiB, "/system.slice/app.service",
     104857600, 104857600, 0, None, HOST, False),
    ("v1_comounted", "cgroup1", "/job/42", 2 * GiB, "/job/42",
     104857600, 104857600, None, 0.5, HOST, False),
    ("v1_pod_view", "cgroup1", "/kubepods/pod1/ctr", 3 * GiB, "/kubepods/pod1/ctr",
     1073741824, 1073741824, 0, None, 3 * GiB, True),
    # No /proc/self/cgroup: the host's MemTotal, usage = MemTotal - MemAvailable.
    ("missing_proc_cgroup", "host", None, HOST, "host",
     (16318032 - 12000000) * KiB, (16318032 - 12000000) * KiB, None, None, HOST, True),
]


@pytest.mark.parametrize(
    "tree, source, cgroup_path, limit, limited_by, usage, working_set, oom_kills, cpus,"
    " ray_limit, ray_sees",
    DETECTION_TABLE, ids=[row[0] for row in DETECTION_TABLE],
)
def test_detect_tree(tmp_path, tree, source, cgroup_path, limit, limited_by, usage,
                     working_set, oom_kills, cpus, ray_limit, ray_sees):
    d = run_detect(TREES / tree, tmp_path)
    assert d.source == source
    assert d.cgroup_path == cgroup_path
    assert d.limit_bytes == limit
    assert d.limited_by == limited_by
    assert d.host_total_bytes == HOST == 16709664768
    assert d.usage_bytes == usage
    assert d.working_set_bytes == working_set
    assert d.oom_kill_count == oom_kills
    assert d.cpu_limit == cpus
    assert d.ray_limit_bytes == ray_limit
    assert d.ray_sees_limit is ray_sees


@pytest.mark.parametrize("tree, version, measured", [
    ("v2_namespace", V2, "sys/fs/cgroup"),
    ("v2_nested", V2, "sys/fs/cgroup/kubepods.slice/pod1"),  # where the limit is, not the leaf
    ("v2_unlimited", V2, "sys/fs/cgroup/user.slice/session-1.scope"),
    ("v1_memory_alone", V1, "sys/fs/cgroup/memory/docker/abc"),
    ("v1_nested", V1, "sys/fs/cgroup/memory/kubepods/pod1"),
    ("hybrid", V1, "sys/fs/cgroup/memory/system.slice/app.service"),
    ("v1_comounted", V1, "sys/fs/cgroup/cpu,cpuacct,memory/job/42"),
    ("v1_pod_view", V1, "sys/fs/cgroup/memory"),  # the bind mount over the root path
])
def test_detect_measures_where_the_limit_is(tmp_path, tree, version, measured):
    d = run_detect(TREES / tree, tmp_path)
    assert d.cgroup_version == version
    assert d.measured_directory == str(TREES / tree / measured)


@pytest.mark.parametrize("tree, leaf", [
    ("v2_nested", "sys/fs/cgroup/kubepods.slice/pod1/ctr"),
    ("v1_nested", "sys/fs/cgroup/memory/kubepods/pod1/ctr"),
    ("v1_pod_view", "sys/fs/cgroup/memory"),
])
def test_detect_leaf_directory(tmp_path, tree, leaf):
    assert run_detect(TREES / tree, tmp_path).leaf_directory == str(TREES / tree / leaf)


@pytest.mark.parametrize("usage_text", ["", "lots\n", "1.5G\n"])
def test_garbage_usage_file_names_the_file(tmp_path, usage_text):
    tree = tmp_path / "t"
    shutil.copytree(TREES / "v2_namespace", tree)
    (tree / "sys/fs/cgroup/memory.current").write_text(usage_text)
    with pytest.raises(CgroupFormatError) as caught:
        run_detect(tree, tmp_path)
    assert caught.value.path == str(tree / "sys/fs/cgroup/memory.current")
    assert str(caught.value).startswith(f"cannot parse {tree / 'sys/fs/cgroup/memory.current'}: expected an integer")


@pytest.mark.parametrize("tree, warnings", [
    ("v2_namespace", ()),
    ("v1_pod_view", ()),
    ("v2_nested", (f"Ray 2.60 alone would size itself from {HOST} bytes, not {2 * GiB}:"
                   " rayguard passes the real numbers and guards memory itself",)),
    ("v1_comounted", (f"Ray 2.60 alone would size itself from {HOST} bytes, not {2 * GiB}:"
                      " rayguard passes the real numbers and guards memory itself",)),
    ("v2_unlimited", ("no memory limit on /user.slice/session-1.scope or its parents; using the"
                      " host's MemTotal. Set a memory limit on the container.",)),
    ("missing_proc_cgroup", ("no memory cgroup found for this process; using the host's MemTotal",)),
])
def test_detect_warnings(tmp_path, tree, warnings):
    assert run_detect(TREES / tree, tmp_path).warnings == warnings


def test_node_sampler_agrees_with_detect(tmp_path):
    root = TREES / "v2_nested"
    limit, usage = NodeSampler(locate_controller("memory", root / "proc", root / "sys")).sample()
    d = run_detect(root, tmp_path)
    assert (limit, usage.usage_bytes, usage.working_set_bytes) == (
        d.limit_bytes, d.usage_bytes, d.working_set_bytes) == (2 * GiB, 524288000, 419430400)


def test_json_dict_hides_private_fields(tmp_path):
    data = run_detect(TREES / "v2_nested", tmp_path).to_json_dict()
    assert not {"measured_directory", "leaf_directory", "cgroup_version"} & set(data)
    assert data["warnings"] == [f"Ray 2.60 alone would size itself from {HOST} bytes, not {2 * GiB}:"
                                " rayguard passes the real numbers and guards memory itself"]


def test_hybrid_ignores_the_unified_memory_max(tmp_path):
    # The unified mount holds memory.max = 12345 but lists no memory controller.
    assert (TREES / "hybrid/sys/fs/cgroup/unified/system.slice/app.service/memory.max").read_text().strip() == "12345"
    assert run_detect(TREES / "hybrid", tmp_path).limit_bytes == 1073741824


@pytest.mark.parametrize("tree, relative, shown", [
    ("malformed_limit", "sys/fs/cgroup/memory.max", "found 'lots of memory'"),
    ("empty_limit", "sys/fs/cgroup/memory.max", "found ''"),
    ("malformed_stat", "sys/fs/cgroup/memory.stat", "twelve'"),
    ("malformed_proc_cgroup", "proc/self/cgroup", "found 'this is not a cgroup file'"),
])
def test_garbage_files_raise_naming_the_file(tmp_path, tree, relative, shown):
    with pytest.raises(CgroupFormatError) as caught:
        run_detect(TREES / tree, tmp_path)
    path = str(TREES / tree / relative)
    message = str(caught.value)
    assert caught.value.path == path
    assert message.startswith(f"cannot parse {path}: expected ")
    assert shown in message
    assert message.endswith("(pass --limit-bytes to bypass detection)")
    assert "\n" not in message


def test_missing_usage_file_raises_oserror_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        run_detect(TREES / "missing_usage", tmp_path)
    path = str(TREES / "missing_usage/sys/fs/cgroup/memory.current")
    assert caught.value.filename == path
    assert path in str(caught.value)


def test_v1_and_v2_inactive_file_keys_are_kept_apart(tmp_path):
    """v1 subtracts total_inactive_file (hierarchical), v2 inactive_file; never the other."""
    v1 = tmp_path / "v1"
    shutil.copytree(TREES / "v1_memory_alone", v1)
    (v1 / "sys/fs/cgroup/memory/docker/abc/memory.stat").write_text(
        "inactive_file 1048576\nhierarchical_memory_limit 536870912\ntotal_inactive_file 31457280\n")
    v2 = tmp_path / "v2"
    shutil.copytree(TREES / "v2_namespace", v2)
    (v2 / "sys/fs/cgroup/memory.stat").write_text(
        "total_inactive_file 5242880\nactive_file 7340032\ninactive_file 62914560\n")

    assert run_detect(v1, tmp_path).working_set_bytes == 209715200 - 31457280
    assert run_detect(v2, tmp_path).working_set_bytes == 314572800 - 62914560

    # The same stat text read with each version's key gives each version's number.
    both = write_tree(tmp_path / "both", {
        "memory.usage_in_bytes": "104857600\n", "memory.current": "104857600\n",
        "memory.stat": "inactive_file 1048576\ntotal_inactive_file 2097152\n"})
    assert UsageReader(both, V1).read().inactive_file_bytes == 2097152
    assert UsageReader(both, V2).read().inactive_file_bytes == 1048576


def test_working_set_never_negative(tmp_path):
    tree = write_tree(tmp_path, {"memory.current": "100\n", "memory.stat": "inactive_file 500\n"})
    usage = UsageReader(tree, V2).read()
    assert (usage.usage_bytes, usage.inactive_file_bytes, usage.working_set_bytes) == (100, 500, 0)


def _v1_pod_view_tree(root: Path, leaf_limit: str, hierarchical: str) -> Path:
    return write_tree(root, {
        "proc/meminfo": "MemTotal:       16318032 kB\nMemAvailable:   12000000 kB\n",
        "proc/self/cgroup": "4:memory:/kubepods/pod1/ctr\n",
        "proc/self/mountinfo": "33 25 0:28 /kubepods/pod1/ctr /sys/fs/cgroup/memory rw"
                               " - cgroup cgroup rw,memory\n",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": leaf_limit + "\n",
        "sys/fs/cgroup/memory/memory.usage_in_bytes": "104857600\n",
        "sys/fs/cgroup/memory/memory.stat": f"hierarchical_memory_limit {hierarchical}\n"
                                            "total_inactive_file 4194304\n",
    })


def test_v1_limit_above_the_mount_root_comes_from_memory_stat(tmp_path):
    tree = _v1_pod_view_tree(tmp_path / "t", V1_SENTINEL, str(1 * GiB))
    d = run_detect(tree, tmp_path)
    assert (d.source, d.limit_bytes, d.limited_by) == ("cgroup1", 1 * GiB, "above /kubepods/pod1/ctr")
    assert d.working_set_bytes == 104857600 - 4194304
    assert (d.ray_limit_bytes, d.ray_sees_limit) == (HOST, False)


def test_v1_sentinel_everywhere_falls_back_to_host(tmp_path):
    tree = _v1_pod_view_tree(tmp_path / "t", V1_SENTINEL, V1_SENTINEL)
    d = run_detect(tree, tmp_path)
    assert (d.source, d.limit_bytes, d.limited_by, d.ray_sees_limit) == ("host", HOST, "host", True)


def test_limit_above_host_memory_is_reported_as_host(tmp_path):
    tree = tmp_path / "t"
    shutil.copytree(TREES / "v2_namespace", tree)
    (tree / "sys/fs/cgroup/memory.max").write_text(f"{32 * GiB}\n")
    d = run_detect(tree, tmp_path)
    assert (d.source, d.limit_bytes, d.limited_by) == ("host", HOST, "host")
    # Ray takes min(limit, host total), which is the same number.
    assert (d.ray_limit_bytes, d.ray_sees_limit) == (HOST, True)


def test_ray_reads_v1_root_file_before_v2(tmp_path):
    tree = tmp_path / "t"
    shutil.copytree(TREES / "v2_namespace", tree)
    write_tree(tree, {"sys/fs/cgroup/memory/memory.limit_in_bytes": f"{768 * MiB}\n"})
    d = run_detect(tree, tmp_path)
    assert (d.limit_bytes, d.ray_limit_bytes, d.ray_sees_limit) == (1 * GiB, 768 * MiB, False)


@pytest.mark.parametrize("limits, cpus, expected_limit, limited_by, expected_cpus", [
    # (root, /a, /a/b, /a/b/c) memory.max and cpu.max; None = no file at that level.
    ((None, "1073741824", "3221225472", "2147483648"), (None, "100000 100000", "300000 100000", "200000"),
     1 * GiB, "/a", 1.0),
    ((None, "3221225472", "max", "2147483648"), (None, "max 100000", "50000 100000", "200000 100000"),
     2 * GiB, "/a/b/c", 0.5),
    (("max", "max", "1610612736", "max"), ("max 100000", None, None, "150000 100000"),
     1536 * MiB, "/a/b", 1.5),
])
def test_v2_minimum_along_the_path(tmp_path, limits, cpus, expected_limit, limited_by, expected_cpus):
    files = {
        "proc/meminfo": "MemTotal:       16318032 kB\n",
        "proc/self/cgroup": "0::/a/b/c\n",
        "proc/self/mountinfo": "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        "sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
    }
    levels = ["", "a/", "a/b/", "a/b/c/"]
    for level, limit, cpu in zip(levels, limits, cpus):
        files[f"sys/fs/cgroup/{level}memory.current"] = "104857600\n"
        files[f"sys/fs/cgroup/{level}memory.stat"] = "inactive_file 0\n"
        if limit is not None:
            files[f"sys/fs/cgroup/{level}memory.max"] = limit + "\n"
        if cpu is not None:
            files[f"sys/fs/cgroup/{level}cpu.max"] = cpu + "\n"
    d = run_detect(write_tree(tmp_path / "t", files), tmp_path)
    assert (d.limit_bytes, d.limited_by, d.cpu_limit) == (expected_limit, limited_by, expected_cpus)
    assert d.measured_directory == str(tmp_path / "t/sys/fs/cgroup" / limited_by.lstrip("/"))


def test_v1_minimum_along_the_path(tmp_path):
    base = "sys/fs/cgroup/memory"
    tree = write_tree(tmp_path / "t", {
        "proc/meminfo": "MemTotal:       16318032 kB\n",
        "proc/self/cgroup": "4:memory:/kubepods/pod1/ctr\n3:cpu,cpuacct:/kubepods/pod1/ctr\n",
        "proc/self/mountinfo": "33 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
                               "34 25 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n",
        f"{base}/memory.limit_in_bytes": V1_SENTINEL,
        f"{base}/kubepods/memory.limit_in_bytes": str(1 * GiB),
        f"{base}/kubepods/pod1/memory.limit_in_bytes": str(4 * GiB),
        f"{base}/kubepods/pod1/memory.usage_in_bytes": "1",
        f"{base}/kubepods/pod1/ctr/memory.limit_in_bytes": str(2 * GiB),
        f"{base}/kubepods/memory.usage_in_bytes": "524288000",
        f"{base}/kubepods/memory.stat": "total_inactive_file 1048576\n",
        f"{base}/kubepods/pod1/ctr/memory.stat": "hierarchical_memory_limit 1073741824\n",
        "sys/fs/cgroup/cpu/kubepods/cpu.cfs_quota_us": "400000",
        "sys/fs/cgroup/cpu/kubepods/cpu.cfs_period_us": "100000",
        "sys/fs/cgroup/cpu/kubepods/pod1/ctr/cpu.cfs_quota_us": "150000",
        "sys/fs/cgroup/cpu/kubepods/pod1/ctr/cpu.cfs_period_us": "100000",
    })
    d = run_detect(tree, tmp_path)
    assert (d.source, d.limit_bytes, d.limited_by, d.cpu_limit) == ("cgroup1", 1 * GiB, "/kubepods", 1.5)
    assert (d.usage_bytes, d.working_set_bytes) == (524288000, 524288000 - 1048576)
