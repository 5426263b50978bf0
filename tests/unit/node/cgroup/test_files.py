"""The pure parsers of cgroup and procfs files, and locating a controller's cgroup."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayguard_node.cgroup.files import (
    parse_cfs,
    parse_cpu_max,
    parse_flat_keyed,
    parse_memory_limit,
)
from rayguard_node.cgroup.paths import (
    V1,
    V2,
    CgroupLocation,
    CgroupMembership,
    CgroupMount,
    locate_controller,
    parse_mountinfo,
    parse_proc_cgroup,
)
from rayguard_node.errors import CgroupFormatError
from tests.paths import DATA_DIR

TREES = DATA_DIR / "cgroup"
SRC = "/proc/self/x"


# --- /proc/self/cgroup -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("0::/\n", [CgroupMembership(0, (), "/")]),
    ("0::/kubepods.slice/pod1/ctr\n", [CgroupMembership(0, (), "/kubepods.slice/pod1/ctr")]),
    ("12:pids:/docker/abc\n5:cpu,cpuacct:/docker/abc\n\n1:name=systemd:/docker/abc\n",
     [CgroupMembership(12, ("pids",), "/docker/abc"),
      CgroupMembership(5, ("cpu", "cpuacct"), "/docker/abc"),
      CgroupMembership(1, ("name=systemd",), "/docker/abc")]),
    ("4:memory:/a:b\n", [CgroupMembership(4, ("memory",), "/a:b")]),  # colons stay in the path
    ("0::/../../kubepods/pod1\n", [CgroupMembership(0, (), "/../../kubepods/pod1")]),
    ("", []),
])
def test_parse_proc_cgroup(text, expected):
    assert parse_proc_cgroup(text, SRC) == expected


@pytest.mark.parametrize("line", ["this is not a cgroup file", "x:memory:/a", "4:memory:relative",
                                  "4:memory"])
def test_parse_proc_cgroup_garbage(line):
    with pytest.raises(CgroupFormatError) as caught:
        parse_proc_cgroup("0::/\n" + line + "\n", SRC)
    assert caught.value.path == SRC
    assert str(caught.value) == (f"cannot parse {SRC}: expected 'hierarchy-id:controllers:/path'"
                                 f" lines, found {line!r} (pass --limit-bytes to bypass detection)")


# --- /proc/self/mountinfo ----------------------------------------------------------------

MOUNTINFO = "\n".join([
    "22 1 0:20 / /proc rw,nosuid - proc proc rw",
    "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate",
    # Optional fields (shared:, master:) before the separator, and none at all.
    "33 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:11 master:3 - cgroup cgroup rw,memory",
    "34 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
    "35 25 0:30 /docker/abc /sys/fs/cgroup/my\\040dir\\011x ro - cgroup cgroup ro,pids",
    "36 25 0:31 /a\\134b /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd",
    "37 25 0:32 / /tmp/a\\040-\\040b rw - tmpfs tmpfs rw",
    "",
])


def test_parse_mountinfo():
    assert parse_mountinfo(MOUNTINFO, SRC) == [
        CgroupMount("/", "/sys/fs/cgroup", V2, ()),
        CgroupMount("/", "/sys/fs/cgroup/memory", V1, ("memory",)),
        CgroupMount("/", "/sys/fs/cgroup/cpu,cpuacct", V1, ("cpu", "cpuacct")),
        CgroupMount("/docker/abc", "/sys/fs/cgroup/my dir\tx", V1, ("pids",)),
        CgroupMount("/a\\b", "/sys/fs/cgroup/systemd", V1, ("xattr", "name=systemd")),
    ]


def test_parse_mountinfo_comounted_controllers():
    line = "40 25 0:40 / /sys/fs/cgroup/cpu,cpuacct,memory rw - cgroup cgroup rw,cpu,cpuacct,memory"
    assert parse_mountinfo(line, SRC) == [
        CgroupMount("/", "/sys/fs/cgroup/cpu,cpuacct,memory", V1, ("cpu", "cpuacct", "memory"))]


def test_parse_mountinfo_without_separator():
    line = "22 1 0:20 / /proc rw,nosuid proc proc rw"
    with pytest.raises(CgroupFormatError) as caught:
        parse_mountinfo(line, SRC)
    assert caught.value.path == SRC
    assert "a mountinfo line with a ' - ' separator" in str(caught.value)


def test_parse_mountinfo_tolerates_an_empty_mount_source():
    """'- tmpfs  rw' (an empty source) is valid mountinfo; it must not fail detection."""
    text = ("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
            "74 25 0:59 / /mnt/tmpfs rw,relatime shared:38 - tmpfs  rw\n")
    assert parse_mountinfo(text, SRC) == [CgroupMount("/", "/sys/fs/cgroup", V2, ())]


# --- limits, flat-keyed files, CPU -------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("max\n", None),
    ("max", None),
    ("9223372036854771712\n", None),  # v1's page-aligned LONG_MAX
    (f"{2**62}\n", None),
    (f"{2**62 - 1}\n", 2**62 - 1),
    ("1073741824\n", 1073741824),
    ("  536870912  \n", 536870912),
    ("0\n", 0),
])
def test_parse_memory_limit(text, expected):
    assert parse_memory_limit(text, SRC) == expected


@pytest.mark.parametrize("text", ["", "\n", "lots of memory", "1.5G", "1Gi", "max max", "0x400"])
def test_parse_memory_limit_garbage(text):
    with pytest.raises(CgroupFormatError) as caught:
        parse_memory_limit(text, SRC)
    assert str(caught.value) == (f"cannot parse {SRC}: expected an integer, found {text.strip()!r}"
                                 " (pass --limit-bytes to bypass detection)")


def test_format_error_shortens_long_content():
    with pytest.raises(CgroupFormatError) as caught:
        parse_memory_limit("x" * 100, SRC)
    assert f"found {'x' * 57 + '...'!r} " in str(caught.value)


@pytest.mark.parametrize("text, expected", [
    ("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n", {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 4}),
    ("low 0\n\nhigh 0\nmax 3\n", {"low": 0, "high": 0, "max": 3}),
    ("hierarchical_memory_limit 9223372036854771712", {"hierarchical_memory_limit": 9223372036854771712}),
])
def test_parse_flat_keyed(text, expected):
    assert parse_flat_keyed(text, SRC) == expected


@pytest.mark.parametrize("text, why", [
    ("", "'key value' lines"),
    ("\n\n", "'key value' lines"),
    ("inactive_file twelve", "'key value' lines with integer values"),
    ("inactive_file", "'key value' lines"),
    ("a 1 2", "'key value' lines"),
])
def test_parse_flat_keyed_garbage(text, why):
    with pytest.raises(CgroupFormatError) as caught:
        parse_flat_keyed(text, SRC)
    assert str(caught.value).startswith(f"cannot parse {SRC}: expected {why}, found ")


@pytest.mark.parametrize("text, expected", [
    ("max 100000\n", None),
    ("max\n", None),
    ("150000 100000\n", 1.5),
    ("200000 100000", 2.0),
    ("50000 100000", 0.5),
    ("250000\n", 2.5),  # period defaults to 100000
])
def test_parse_cpu_max(text, expected):
    assert parse_cpu_max(text, SRC) == expected


@pytest.mark.parametrize("text, why", [
    ("", "'QUOTA PERIOD' or 'max PERIOD'"),
    ("1 2 3", "'QUOTA PERIOD' or 'max PERIOD'"),
    ("lots 100000", "an integer"),
    ("100000 0", "a positive period"),
])
def test_parse_cpu_max_garbage(text, why):
    with pytest.raises(CgroupFormatError) as caught:
        parse_cpu_max(text, SRC)
    assert str(caught.value).startswith(f"cannot parse {SRC}: expected {why}")


@pytest.mark.parametrize("quota, period, expected", [
    ("200000\n", "100000\n", 2.0),
    ("50000", "100000", 0.5),
    ("-1\n", "100000\n", None),
    ("-1", "0", None),  # unlimited: the period does not matter
])
def test_parse_cfs(quota, period, expected):
    assert parse_cfs(quota, period, "/cg") == expected


@pytest.mark.parametrize("quota, period, path", [
    ("lots", "100000", "/cg/cpu.cfs_quota_us"),
    ("100000", "", "/cg/cpu.cfs_period_us"),
    ("100000", "0", "/cg/cpu.cfs_period_us"),
])
def test_parse_cfs_garbage_names_the_file(quota, period, path):
    with pytest.raises(CgroupFormatError) as caught:
        parse_cfs(quota, period, "/cg")
    assert caught.value.path == path


# --- CgroupLocation.chain ----------------------------------------------------------------

def _location(path: str, mount_root: str, relative: str) -> CgroupLocation:
    mount_directory = Path("/fake/sys/fs/cgroup")
    directory = mount_directory / relative if relative else mount_directory
    return CgroupLocation(V2, path, mount_root, "/sys/fs/cgroup", directory, mount_directory)


@pytest.mark.parametrize("path, mount_root, relative, expected", [
    ("/", "/", "", [("/", "")]),
    ("/kubepods.slice/pod1/ctr", "/", "kubepods.slice/pod1/ctr",
     [("/kubepods.slice/pod1/ctr", "kubepods.slice/pod1/ctr"), ("/kubepods.slice/pod1", "kubepods.slice/pod1"),
      ("/kubepods.slice", "kubepods.slice"), ("/", "")]),
    ("/kubepods/pod1/ctr", "/kubepods", "pod1/ctr",
     [("/kubepods/pod1/ctr", "pod1/ctr"), ("/kubepods/pod1", "pod1"), ("/kubepods", "")]),
    ("/kubepods/pod1/ctr", "/kubepods/pod1/ctr", "", [("/kubepods/pod1/ctr", "")]),
])
def test_chain_runs_leaf_first_up_to_the_mount_root(path, mount_root, relative, expected):
    base = Path("/fake/sys/fs/cgroup")
    chain = _location(path, mount_root, relative).chain()
    assert chain == [(p, base / r if r else base) for p, r in expected]


# --- locate_controller -------------------------------------------------------------------

@pytest.mark.parametrize("tree, controller, version, path, mount_root, relative", [
    ("v2_nested", "memory", V2, "/kubepods.slice/pod1/ctr", "/", "kubepods.slice/pod1/ctr"),
    ("v2_nested", "cpu", V2, "/kubepods.slice/pod1/ctr", "/", "kubepods.slice/pod1/ctr"),
    ("v1_memory_alone", "memory", V1, "/docker/abc", "/", "memory/docker/abc"),
    ("v1_memory_alone", "cpu", V1, "/docker/abc", "/", "cpu,cpuacct/docker/abc"),
    ("v1_comounted", "memory", V1, "/job/42", "/", "cpu,cpuacct,memory/job/42"),
    ("v1_comounted", "cpu", V1, "/job/42", "/", "cpu,cpuacct,memory/job/42"),
    ("hybrid", "memory", V1, "/system.slice/app.service", "/", "memory/system.slice/app.service"),
    # Shadowed mount: the pod's cgroup bind-mounted over the root path; the last mount wins.
    ("v1_pod_view", "memory", V1, "/kubepods/pod1/ctr", "/kubepods/pod1/ctr", "memory"),
])
def test_locate_controller(tree, controller, version, path, mount_root, relative):
    root = TREES / tree
    location = locate_controller(controller, root / "proc", root / "sys")
    assert location is not None
    assert (location.version, location.path, location.mount_root) == (version, path, mount_root)
    assert location.directory == root / "sys/fs/cgroup" / relative


def test_locate_controller_v1_pod_view_mount_details():
    root = TREES / "v1_pod_view"
    location = locate_controller("memory", root / "proc", root / "sys")
    assert location.mount_point == "/sys/fs/cgroup/memory"
    assert location.mount_directory == location.directory == root / "sys/fs/cgroup/memory"
    assert location.chain() == [("/kubepods/pod1/ctr", root / "sys/fs/cgroup/memory")]


@pytest.mark.parametrize("tree, controller", [
    ("missing_proc_cgroup", "memory"),
    ("hybrid", "pids"),          # not mounted anywhere
    ("v2_nested", "hugetlb"),    # not in cgroup.controllers
    ("v2_namespace", "rdma"),
])
def test_locate_controller_absent(tree, controller):
    root = TREES / tree
    assert locate_controller(controller, root / "proc", root / "sys") is None


def test_locate_controller_escaped_namespace_uses_the_mount_root(tmp_path):
    """A cgroup path with '/../' lies outside our namespace's root: read the mount root."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("0::/../../kubepods.slice/pod2/ctr\n")
    (tmp_path / "proc/self/mountinfo").write_text(
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/cgroup.controllers").write_text("cpu memory\n")
    location = locate_controller("memory", tmp_path / "proc", tmp_path / "sys")
    assert (location.version, location.path, location.mount_root) == (V2, "/", "/")
    assert location.directory == location.mount_directory == tmp_path / "sys/fs/cgroup"
    assert location.chain() == [("/", tmp_path / "sys/fs/cgroup")]


def test_locate_controller_host_paths_outside_the_mount_root(tmp_path):
    """No cgroup namespace: /proc names a host path the mount (rooted elsewhere) cannot show."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("4:memory:/kubepods/pod9/other\n")
    (tmp_path / "proc/self/mountinfo").write_text(
        "33 25 0:28 /kubepods/pod1/ctr /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    location = locate_controller("memory", tmp_path / "proc", tmp_path / "sys")
    assert (location.path, location.mount_root) == ("/kubepods/pod1/ctr", "/kubepods/pod1/ctr")
    assert location.directory == tmp_path / "sys/fs/cgroup/memory"
