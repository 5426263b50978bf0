"""The `ray_monitor_kill` detector: raylet.out parsing (on real Ray 2.60 captures) and
following the file across rotation and new sessions (real files in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayguard_node.guard.raylet_log import (
    GIB,
    RayletLogParser,
    RayMonitorKill,
    RayOomSummary,
    gb_to_bytes,
    parse,
)
from tests.paths import DATA_DIR

DATA = DATA_DIR / "raylet"
ONE_TASK = DATA / "raylet_oom_kill.out"
TWO_WORKERS = DATA / "raylet_oom_kill_two_workers.out"
IDLE_THEN_ACTOR = DATA / "raylet_oom_idle_then_actor.out"
FIXTURES = {ONE_TASK: 1, TWO_WORKERS: 2, IDLE_THEN_ACTOR: 2}

NODE_ONE = "b16b8e823511b6039501eeefc2d2f85b032fc60661bae2d1ec897b8c"
PREFIX = "[2026-11-23 15:42:42,775 I 7614 7614] (raylet) node_manager.cc:3199: "
NEXT_RECORD = "[2026-11-23 15:42:42,775 I 7614 7614] (raylet) node_manager.cc:1477: Disconnecting worker"
HEADER = (PREFIX + "Killing 1 worker(s), kill details: Memory on the node (IP: 10.0.0.7, ID: abcd) "
          "was 3.50GB used / 4.00GB limit (0.875000)")
SELECTED = ("Selected to kill: (Task: job ID=02000000, lease ID=ff, task name=train_step, "
            "required resources={CPU: 1, memory: 1073741824}, pid=4242, actual memory used=2.49GB, "
            "worker ID=deadbeef)")


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


def gib(text: str) -> int:
    return round(float(text) * 2**30)


# -- the real captures ------------------------------------------------------------------


def test_single_task_kill_parses_exactly() -> None:
    parser = RayletLogParser()
    kills = parser.feed_lines(lines_of(ONE_TASK))
    assert parser.flush() == []  # emitted when its Top-10 block ended, not at EOF
    top = (
        (7727, gib("1.43"), "ray::hog"),
        (7637, gib("0.08"), "ray::DashboardAgent"),
        (7579, gib("0.08"), "/usr/local/bin/python /usr/local/lib/python3.11/site-packages/ray/dashboard/dashboard.py..."),
        (7466, gib("0.06"), "/usr/local/bin/python /app/driver.py"),
        (7639, gib("0.04"), "ray::RuntimeEnvAgent"),
        (7553, gib("0.04"), "/usr/local/bin/python -u /usr/local/lib/python3.11/site-packages/ray/autoscaler/_private..."),
        (7613, gib("0.04"), "/usr/local/bin/python -u /usr/local/lib/python3.11/site-packages/ray/_private/log_monito..."),
        (7519, gib("0.04"), "/usr/local/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp/ray..."),
        (7614, gib("0.02"), "/usr/local/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=/t..."),
        (7465, gib("0.01"), "/usr/local/bin/python -m rayguard_node run --role head"),
    )
    assert kills == [RayMonitorKill(
        pid=7727, task_name="hog", memory_used_bytes=1535450808,
        node_used_bytes=round(0.909466 * 2147483648), node_limit_bytes=2147483648,
        fraction=0.909466, top=top, threshold=0.9, worker_kind="task", actor_id="",
        worker_id="2ccf5898605104f2506ee9a20c939d5920f3153067301b7519dbf019", job_id="01000000",
        node_ip="192.0.2.2", node_id=NODE_ONE, workers_killed=1, log_time="2026-11-23 15:42:42,775")]
    assert kills[0].process_name == "ray::hog"
    assert parser.unparsed_lines == 0
    assert parser.monitor_threshold_bytes == 1932735232
    assert parser.monitor_total_bytes == 2147483648


def test_node_usage_agrees_with_what_ray_printed() -> None:
    (kill,) = parse(lines_of(ONE_TASK))
    assert round(kill.node_used_bytes / GIB, 2) == 1.82  # "was 1.82GB used"
    assert round(kill.node_limit_bytes / GIB, 2) == 2.00  # "/ 2.00GB limit"


def test_two_workers_killed_in_one_decision() -> None:
    parser = RayletLogParser()
    kills = parser.feed_lines(lines_of(TWO_WORKERS)) + parser.flush()
    # Three workers were considered; pid 10159 was listed but not selected.
    assert [(k.pid, k.task_name, k.memory_used_bytes) for k in kills] == [
        (10226, "burst", gib("0.20")), (10160, "burst", gib("0.27"))]
    assert {k.workers_killed for k in kills} == {2}
    assert {k.threshold for k in kills} == {0.5}
    assert {k.node_limit_bytes for k in kills} == {2147483648}
    assert kills[0].top == kills[1].top
    assert kills[0].top[:3] == ((10160, gib("0.27"), "ray::burst"), (10159, gib("0.26"), "ray::burst"),
                                (10226, gib("0.20"), "ray::burst"))
    assert kills[1].worker_id == "eee1577b6e4167ad501634fdb1bbf25b6e8bebf530403937a5bd4662"
    # Ray's periodic summary agrees with what was parsed.
    assert list(parser.summaries) == [RayOomSummary(
        oom_killed=2, crashed=0, node_id="5e7460402ba03a97b7cd1f7eb14ef51a8309412e4b04feb1fee311f4",
        node_ip="192.0.2.2", log_time="2026-11-23 15:44:46,672")]
    assert parser.summary_oom_killed == parser.kills_emitted == 2
    assert parser.unparsed_lines == 0


def test_idle_worker_then_actor() -> None:
    parser = RayletLogParser()
    idle, actor = parser.feed_lines(lines_of(IDLE_THEN_ACTOR)) + parser.flush()
    assert (idle.pid, idle.task_name, idle.worker_kind, idle.job_id) == (11401, "", "idle_worker", "")
    assert idle.memory_used_bytes == gib("1.17")
    assert idle.process_name == "ray::IDLE"
    assert idle.worker_id == "86878db06d76e406e19aa137d6998822c3d9313d60a41361fe34ba4c"
    # An actor's lease is its creation task; the process title names the running method.
    assert (actor.pid, actor.task_name, actor.worker_kind) == (11400, "Grower.__init__", "actor")
    assert actor.actor_id == "d132f68f89882081c5c9cff101000000"
    assert actor.process_name == "ray::Grower.grow"
    assert actor.memory_used_bytes == gib("1.42")
    assert actor.fraction == 0.906979
    assert actor.log_time == "2026-11-23 15:45:35,054"
    assert actor.top[4] == (11657, gib("0.06"), "python /app/batch_job.py")
    assert parser.summary_oom_killed == parser.kills_emitted == 2
    assert parser.unparsed_lines == 0


@pytest.mark.parametrize("path", list(FIXTURES), ids=lambda p: p.name)
def test_a_record_read_twice_is_reported_once(path: Path) -> None:
    parser = RayletLogParser()
    kills = parser.feed_lines(lines_of(path) + lines_of(path)) + parser.flush()
    assert len(kills) == FIXTURES[path]


@pytest.mark.parametrize("path", list(FIXTURES), ids=lambda p: p.name)
def test_one_damaged_line_never_raises_and_never_loses_a_kill(path: Path) -> None:
    lines = lines_of(path)
    for index, line in enumerate(lines):
        for cut in {len(line) // 4, len(line) // 2, max(len(line) - 1, 0)}:
            damaged = lines[:index] + [line[:cut]] + lines[index + 1:]
            kills = parse(damaged)
            assert len(kills) == FIXTURES[path], (index, cut)


# -- line variants ------------------------------------------------------------------------


def test_gb_is_gib() -> None:
    assert gb_to_bytes("2.00") == 2 * 2**30 != 2 * 10**9
    kills = parse([HEADER, SELECTED, NEXT_RECORD])
    assert kills[0].node_limit_bytes == 4 * 2**30
    assert kills[0].node_used_bytes == round(0.875 * 4 * 2**30)
    assert kills[0].memory_used_bytes == round(2.49 * 2**30)
    assert kills[0].threshold is None
    assert kills[0].task_name == "train_step"
    assert kills[0].job_id == "02000000"
    assert kills[0].top == ()


def test_exact_limit_from_the_monitor_start_line() -> None:
    init = ("[2026-11-23 15:42:34,227 I 7614 7614] (raylet) threshold_memory_monitor.cc:53: "
            "ThresholdMemoryMonitor initialized with usage threshold at 4080218931 bytes "
            "(95.000000% of system memory), total system memory bytes: 4294967296, monitor interval: 250ms")
    (kill,) = parse([init, HEADER, SELECTED, NEXT_RECORD])
    assert kill.node_limit_bytes == 4294967296
    assert kill.threshold == 0.95


def test_a_start_line_from_another_limit_is_not_trusted() -> None:
    init = ("[t] ThresholdMemoryMonitor initialized with usage threshold at 950 bytes (95.000000% of "
            "system memory), total system memory bytes: 1000, monitor interval: 250ms")
    (kill,) = parse([init, HEADER, SELECTED])
    assert kill.node_limit_bytes == 4 * 2**30


def test_older_header_and_a_top_block_with_its_own_column_line() -> None:
    lines = [
        PREFIX + "Killing 1 worker(s), kill details: Memory on the node (IP:, ID: e5d9) was 27.71GB / 28.80GB (0.962273)",
        SELECTED,
        "Top 10 memory users:",
        "PID\tMEM(GB)\tCOMMAND",
        "4242\t2.49\tray::train_step",
        "20    0.19  /usr/local/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server",
        "",
    ]
    (kill,) = parse(lines)
    assert kill.node_ip == "" and kill.node_id == "e5d9"
    assert kill.node_limit_bytes == gib("28.80")
    assert kill.top == ((4242, gib("2.49"), "ray::train_step"),
                        (20, gib("0.19"), "/usr/local/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server"))


def test_a_full_top_block_is_emitted_at_its_tenth_row() -> None:
    parser = RayletLogParser()
    assert parser.feed_lines([HEADER, SELECTED, "Top 10 memory users: PID\tMEM(GB)\tCOMMAND"]) == []
    rows = [f"{1000 + n}\t0.{20 - n:02d}\tray::w{n}" for n in range(10)]
    assert parser.feed_lines(rows[:9]) == []
    (kill,) = parser.feed(rows[9])
    assert not parser.pending
    assert len(kill.top) == 10 and kill.top[0] == (1000, gib("0.20"), "ray::w0")


def test_top_rows_are_sorted_and_an_empty_command_is_kept() -> None:
    lines = [HEADER, SELECTED, "Top 10 memory users: PID\tMEM(GB)\tCOMMAND",
             "7\t0.10\tsmall", "8\t0.90\t", "9\t0.50\tray::mid", " suggestions: ..."]
    (kill,) = parse(lines)
    assert kill.top == ((8, gib("0.90"), ""), (9, gib("0.50"), "ray::mid"), (7, gib("0.10"), "small"))


def test_a_record_without_top_block_ends_at_the_next_record() -> None:
    parser = RayletLogParser()
    assert parser.feed_lines([HEADER, SELECTED]) == []
    assert parser.pending
    (kill,) = parser.feed(NEXT_RECORD)
    assert kill.pid == 4242 and not parser.pending


def test_a_new_kill_record_ends_the_previous_one() -> None:
    second = SELECTED.replace("pid=4242", "pid=4343").replace("worker ID=deadbeef", "worker ID=feed")
    parser = RayletLogParser()
    first = parser.feed_lines([HEADER, SELECTED, "Top 10 memory users: PID\tMEM(GB)\tCOMMAND",
                               "4242\t2.49\tray::train_step"])
    assert first == []
    emitted = parser.feed(HEADER)
    assert [k.pid for k in emitted] == [4242]
    emitted = parser.feed_lines([second]) + parser.flush()
    assert [k.pid for k in emitted] == [4343]


def test_flush_emits_a_pending_record_once() -> None:
    parser = RayletLogParser()
    parser.feed_lines([HEADER, SELECTED, "Top 10 memory users: PID\tMEM(GB)\tCOMMAND", "4242\t2.49\tray::x"])
    (kill,) = parser.flush()
    assert kill.top == ((4242, gib("2.49"), "ray::x"),)
    assert parser.flush() == []
    assert parser.feed("4243\t0.10\tray::late") == []


def test_a_victim_without_its_header_is_reported_without_node_numbers() -> None:
    (kill,) = parse([SELECTED, NEXT_RECORD])
    assert (kill.pid, kill.node_limit_bytes, kill.node_used_bytes, kill.fraction) == (4242, 0, 0, 0.0)
    assert kill.workers_killed == 1


@pytest.mark.parametrize("line", [
    PREFIX + "Killing two worker(s), kill details: Memory on the node (IP: x, ID: y) was lots",
    "OOM kill reason: Memory usage lots exceeded threshold",
    "4242\tlots\tray::x",
    PREFIX + "1 Workers (tasks / actors) killed due to memory pressure (OOM), at node ??",
    "[t] ThresholdMemoryMonitor initialized with usage threshold at lots",
])
def test_malformed_lines_are_counted_and_skipped(line: str) -> None:
    parser = RayletLogParser()
    if line.startswith("OOM"):
        parser.feed_lines([HEADER])
    elif line.startswith("4242"):
        parser.feed_lines([HEADER, SELECTED, "Top 10 memory users: PID\tMEM(GB)\tCOMMAND"])
    parser.feed(line)
    parser.flush()
    assert parser.unparsed_lines == 1


def test_a_malformed_header_still_reports_its_victim() -> None:
    parser = RayletLogParser()
    bad = PREFIX + "Killing 1 worker(s), kill details: Memory on the node was unknown"
    (kill,) = parser.feed_lines([bad, SELECTED, NEXT_RECORD])
    assert kill.pid == 4242 and kill.node_limit_bytes == 0
    assert parser.unparsed_lines == 1


@pytest.mark.parametrize("victim", [
    "Selected to kill: (Task: job ID=02000000, task name=x, pid=oops)",
    "Selected to kill: (Something new: pid=1, actual memory used=1.00GB, worker ID=ab)",
    "Selected to kill: (Task: pid=1, actual memory used=1.00GB, worker ID=ab)",
])
def test_a_malformed_victim_is_still_a_kill_with_pid_none(victim: str) -> None:
    parser = RayletLogParser()
    (kill,) = parser.feed_lines([HEADER, victim, NEXT_RECORD])
    assert kill.pid is None and kill.task_name == "" and kill.worker_kind == "unknown"
    assert kill.node_limit_bytes == 4 * 2**30
    assert parser.unparsed_lines == 1


def test_garbage_never_raises() -> None:
    parser = RayletLogParser()
    junk = ["", "\x00\xff", "[", "]", "Top 10 memory users:", "Selected to kill: ", "Selected to kill: (",
            "Killing 1 worker(s), kill details:", "(Task: pid=1)", "1\t", "1 2", "OOM kill reason:",
            "killed due to memory pressure (OOM)", "x" * 100_000]
    for line in junk * 3:
        parser.feed(line)
    parser.flush()
    assert parser.unparsed_lines > 0
