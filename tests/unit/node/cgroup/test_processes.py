"""Per-process accounting on the fake procfs under tests/data/proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rayguard_node.cgroup import processes as accounting
from rayguard_node.cgroup.processes import (
    PAGE_BYTES,
    ProcessMemory,
    classify,
    parse_start_ticks,
    pids_in_cgroup,
    process_name,
    read_process,
    scan,
    top,
)
from tests.paths import DATA_DIR

PROC = DATA_DIR / "proc"
ALL_PIDS = list(range(101, 115))
READABLE = [101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 112, 114]  # not 111, 113

# pid, name, class, statm resident pages, statm shared pages, start ticks
PROCESSES = [
    (101, "/usr/lib/python3/site-packages/ray/core/src/ray/raylet/raylet"
          " --raylet_socket_name=/tmp/ray/s", "raylet", 20000, 5000, 1101),
    (102, "/usr/lib/python3/site-packages/ray/core/src/ray/gcs/gcs_server --gcs_server_port=6379",
     "gcs_server", 15000, 3000, 1102),
    (103, "redis-server 127.0.0.1:6380", "redis", 3000, 500, 1103),
    (104, "/usr/bin/python3 -u /usr/lib/python3/site-packages/ray/dashboard/dashboard.py"
          " --host=0.0.0.0", "dashboard", 30000, 8000, 1104),
    (105, "ray::DashboardAgent", "dashboard", 25000, 6000, 1105),
    (106, "ray::IDLE", "idle_worker", 22000, 10000, 1106),
    (107, "ray::allocate_memory", "worker", 400000, 100000, 1107),
    (108, "ray::Trainer.train", "worker", 150000, 20000, 1108),
    (109, "/venv/bin/python3 /venv/bin/rayguard-node run --role worker", "runtime", 12000, 3000, 1109),
    (110, "ray::IDLE_SpillWorker", "idle_worker", 18000, 9000, 1110),
    (112, "/bin/bash", "other", 1000, 800, 1112),
    (114, "ray::odd", "worker", 5, 1, 9999),  # comm "we (ird) name"
]
BY_PID = {row[0]: row for row in PROCESSES}


@pytest.mark.parametrize("name, expected", [
    ("/usr/lib/python3/site-packages/ray/core/src/ray/raylet/raylet --node_ip_address=10.0.0.1", "raylet"),
    ("raylet", "raylet"),
    ("/x/ray/core/src/ray/gcs/gcs_server --gcs_server_port=6379", "gcs_server"),
    ("redis-server 127.0.0.1:6380", "redis"),
    ("/usr/bin/redis-server *:6380", "redis"),
    ("/usr/bin/python3 -u /x/ray/dashboard/dashboard.py --host=0.0.0.0", "dashboard"),
    ("/usr/bin/python3 -u /x/ray/dashboard/agent.py --node-ip-address=10.0.0.1", "dashboard"),
    ("/usr/bin/python3 -u /x/ray/_private/runtime_env/agent/main.py --node-ip-address=1", "dashboard"),
    ("ray::DashboardAgent", "dashboard"),
    ("ray::RuntimeEnvAgent", "dashboard"),
    ("ray-dashboard-JobHead-0 (/usr/bin/python3 -u /x/ray/dashboard/dashboard.py)", "dashboard"),
    ("ray::allocate_memory", "worker"),
    ("ray::Trainer.train", "worker"),
    ("ray::Trainer.__init__", "worker"),
    ("ray::IDLE", "idle_worker"),
    ("ray::IDLE_SpillWorker", "idle_worker"),
    ("ray::IDLE_RestoreWorker", "idle_worker"),
    ("/venv/bin/python3 /venv/bin/rayguard-node run --role worker", "runtime"),
    ("python -m rayguard_node run --role head", "runtime"),
    ("/bin/bash", "other"),
    ("python train.py", "other"),
    ("", "other"),
])
def test_classify(name, expected):
    assert classify(name) == expected


@pytest.mark.parametrize("name", ["ray::DashboardUpdater.refresh", "ray::Dashboard.render",
                                  "ray::DashboardAgentX.run", "ray::RuntimeEnvAgentLike"])
def test_classify_user_actor_named_like_the_dashboard(name):
    assert classify(name) == "worker"


@pytest.mark.parametrize("raw, expected", [
    (b"/bin/bash\0", "/bin/bash"),
    (b"/usr/bin/python3\0-u\0/x/dashboard.py\0--host=0.0.0.0\0", "/usr/bin/python3 -u /x/dashboard.py --host=0.0.0.0"),
    (b"ray::IDLE" + b" " * 40, "ray::IDLE"),
    (b"redis-server 127.0.0.1:6380\0\0\0", "redis-server 127.0.0.1:6380"),
    (b"ray::Trainer.train" + b" " * 40, "ray::Trainer.train"),  # > 15 chars, kept whole
    (b"", ""),
    (b"\0\0", ""),
    (b"ray::caf\xe9\0", "ray::caf\ufffd"),
    (b"x" * 500, "x" * 200),
])
def test_process_name(raw, expected):
    assert process_name(raw) == expected


@pytest.mark.parametrize("pid", [101, 105, 106, 107, 108, 110, 114])
def test_process_name_from_the_fake_cmdline(pid):
    assert process_name((PROC / str(pid) / "cmdline").read_bytes()) == BY_PID[pid][1]


def test_long_names_kept_past_comm_limit():
    # comm is cut at 15 characters; the cmdline is not.
    assert (PROC / "108/stat").read_text().startswith("108 (ray::Trainer.tr) ")
    assert read_process(PROC, 108).name == "ray::Trainer.train"
    assert read_process(PROC, 105).name == "ray::DashboardAgent"


@pytest.mark.parametrize("pid, name, process_class, rss_pages, shared_pages, start", PROCESSES,
                         ids=[str(row[0]) for row in PROCESSES])
def test_read_process(pid, name, process_class, rss_pages, shared_pages, start):
    process = read_process(PROC, pid)
    assert process == ProcessMemory(pid, name, process_class, rss_pages * PAGE_BYTES,
                                    shared_pages * PAGE_BYTES, start, None)
    assert process.rss_minus_shr_bytes == (rss_pages - shared_pages) * PAGE_BYTES


@pytest.mark.parametrize("stat, ticks", [
    ("114 (we (ird) name) S 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 9999 0 0", 9999),
    ("1 (a) b) c) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 0", 4242),
    ("7 (x y z) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 77 0", 77),
    (b"114 (we (ird) name) S 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 9999 0 0", 9999),
])
def test_parse_start_ticks(stat, ticks):
    assert parse_start_ticks(stat) == ticks


def test_page_size_is_the_systems():
    import os
    assert PAGE_BYTES == os.sysconf("SC_PAGE_SIZE") > 0


def test_scan_skips_vanished_and_kernel_threads():
    snapshot = scan(PROC, ALL_PIDS)
    assert [p.pid for p in snapshot] == READABLE
    assert read_process(PROC, 113) is None  # cmdline only: vanished mid-read
    assert read_process(PROC, 111) is None  # kernel thread: empty cmdline
    assert read_process(PROC, 999) is None  # never existed
    assert {p.pid: p.process_class for p in snapshot} == {row[0]: row[2] for row in PROCESSES}


def test_scan_counts_each_class():
    counts: dict[str, int] = {}
    for process in scan(PROC, ALL_PIDS):
        counts[process.process_class] = counts.get(process.process_class, 0) + 1
    assert counts == {"raylet": 1, "gcs_server": 1, "redis": 1, "dashboard": 2, "idle_worker": 2,
                      "worker": 3, "runtime": 1, "other": 1}


@pytest.mark.parametrize("pid, uss_kib", [(101, 40000), (102, 30000), (107, 800000), (112, 2000)])
def test_uss_from_smaps_rollup(pid, uss_kib):
    assert read_process(PROC, pid, with_uss=True).uss_bytes == uss_kib * 1024
    assert read_process(PROC, pid).uss_bytes is None


def test_scan_with_uss():
    snapshot = {p.pid: p for p in scan(PROC, [101, 107, 109], with_uss=True)}
    assert {pid: p.uss_bytes for pid, p in snapshot.items()} == {
        101: 40000 * 1024, 107: 800000 * 1024, 109: 24000 * 1024}


def test_scan_with_uss_keeps_processes_without_smaps_rollup():
    """pid 114 has no smaps_rollup: USS is optional, the process must still be counted."""
    snapshot = {p.pid: p for p in scan(PROC, [112, 114], with_uss=True)}
    assert sorted(snapshot) == [112, 114]
    assert snapshot[114].uss_bytes is None
    assert snapshot[114].rss_bytes == 5 * PAGE_BYTES


@pytest.mark.parametrize("runtime_pid, pid, expected", [
    (112, 112, "runtime"),  # "other" by name, but it is us
    (107, 107, "worker"),   # a real class is not overwritten
    (None, 112, "other"),
    (999, 112, "other"),
])
def test_runtime_pid_marking(runtime_pid, pid, expected):
    snapshot = {p.pid: p for p in scan(PROC, READABLE, runtime_pid=runtime_pid)}
    assert snapshot[pid].process_class == expected
    assert snapshot[pid].name == BY_PID[pid][1]
    assert snapshot[pid].rss_bytes == BY_PID[pid][3] * PAGE_BYTES


# Order by RSS - SHR in pages, ties by pid: 107 300000, 108 130000, 104 22000, 105 19000,
# 101 15000, 102 12000, 106 12000, 109 9000, 110 9000, 103 2500, 112 200, 114 4.
TOP_ORDER = [107, 108, 104, 105, 101, 102, 106, 109, 110, 103, 112, 114]


@pytest.mark.parametrize("n, expected", [
    (None, TOP_ORDER[:10]), (10, TOP_ORDER[:10]), (3, [107, 108, 104]), (1, [107]), (0, []),
    (50, TOP_ORDER),
])
def test_top(n, expected):
    snapshot = scan(PROC, ALL_PIDS)
    chosen = top(snapshot) if n is None else top(snapshot, n)
    assert [p.pid for p in chosen] == expected
    sizes = [p.rss_minus_shr_bytes for p in chosen]
    assert sizes == sorted(sizes, reverse=True)


def test_top_entry():
    entry = top(scan(PROC, ALL_PIDS), 1)[0].to_top_entry()
    assert entry == {"pid": 107, "name": "ray::allocate_memory",
                     "rss_minus_shr_bytes": 300000 * PAGE_BYTES}


def test_rss_minus_shr_never_negative():
    assert ProcessMemory(1, "x", "other", 10, 20, 0).rss_minus_shr_bytes == 0


def test_pids_in_cgroup_walks_descendants(tmp_path):
    (tmp_path / "a/b").mkdir(parents=True)
    (tmp_path / "cgroup.procs").write_text("1\n2\n")
    (tmp_path / "a/cgroup.procs").write_text("")
    (tmp_path / "a/b/cgroup.procs").write_text("30\n")
    assert sorted(pids_in_cgroup(tmp_path)) == [1, 2, 30]


def test_all_pids_lists_numeric_entries():
    assert sorted(accounting.all_pids(PROC)) == ALL_PIDS


def test_cgroup_procs_is_read_bounded_and_junk_is_skipped(tmp_path: Path) -> None:
    from rayguard_node.cgroup.processes import read_procs

    (tmp_path / "child").mkdir()
    (tmp_path / "cgroup.procs").write_text("12\n34\n")
    (tmp_path / "child" / "cgroup.procs").write_text("56\nnot-a-pid\n٧\n")
    assert sorted(pids_in_cgroup(tmp_path)) == [12, 34, 56]
    assert read_procs(tmp_path / "missing") == []
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_procs(fifo) == []  # neither blocks nor raises
