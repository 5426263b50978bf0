"""Following raylet.out across rotation, truncation and new sessions (real files in
tmp_path), and the `ray_monitor_kill` detector on top of it."""

from __future__ import annotations

import os
from pathlib import Path

from rayguard_node.guard.log_follower import RayletLogFollower
from rayguard_node.guard.raylet_log import RayMonitorKill, RayMonitorKillDetector
from tests.paths import DATA_DIR
from tests.unit.node.guard.test_raylet_log import HEADER, SELECTED

DATA = DATA_DIR / "raylet"
ONE_TASK = DATA / "raylet_oom_kill.out"
TWO_WORKERS = DATA / "raylet_oom_kill_two_workers.out"
IDLE_THEN_ACTOR = DATA / "raylet_oom_idle_then_actor.out"

def gib(text: str) -> int:
    return round(float(text) * 2**30)


# -- the real captures ------------------------------------------------------------------


# -- following the file ---------------------------------------------------------------------


def new_session(temp_dir: Path, name: str, text: str | None = "") -> Path:
    logs = temp_dir / name / "logs"
    logs.mkdir(parents=True)
    link = temp_dir / "session_latest"
    tmp_link = temp_dir / "session_latest.tmp"
    tmp_link.symlink_to(temp_dir / name)
    os.replace(tmp_link, link)
    log = logs / "raylet.out"
    if text is not None:
        log.write_text(text)
    return log


def append(path: Path, text: str) -> None:
    with path.open("a") as handle:
        handle.write(text)


def test_missing_file_then_created(tmp_path: Path) -> None:
    follower = RayletLogFollower(tmp_path)
    assert follower.poll() == []  # no session yet
    log = new_session(tmp_path, "session_1", text=None)
    assert follower.poll() == []  # session, no raylet.out yet
    log.write_text("one\ntwo\n")
    assert follower.poll() == ["one", "two"]
    assert follower.poll() == []


def test_a_partial_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = new_session(tmp_path, "session_1", "first\npar")
    follower = RayletLogFollower(tmp_path)
    assert follower.poll() == ["first"]
    append(log, "tial")
    assert follower.poll() == []
    append(log, " line\r\nnext\n")
    assert follower.poll() == ["partial line", "next"]


def test_rotation_reads_the_old_tail_then_the_new_file(tmp_path: Path) -> None:
    log = new_session(tmp_path, "session_1", "a\n")
    follower = RayletLogFollower(tmp_path)
    assert follower.poll() == ["a"]
    with log.open("a") as writer:
        writer.write("b\n")
        writer.flush()
        os.rename(log, log.with_name("raylet.out.1"))
        writer.write("c\nunfinished")  # the writer still holds the old file
    log.write_text("d\n")
    assert follower.poll() == ["b", "c", "unfinished", "d"]
    assert follower.rotations == 1
    append(log, "e\n")
    assert follower.poll() == ["e"]


def test_rotated_away_and_not_yet_recreated(tmp_path: Path) -> None:
    log = new_session(tmp_path, "session_1", "a\n")
    follower = RayletLogFollower(tmp_path)
    assert follower.poll() == ["a"]
    append(log, "b\n")
    os.rename(log, log.with_name("raylet.out.1"))
    assert follower.poll() == ["b"]
    assert follower.poll() == []
    log.write_text("c\n")
    assert follower.poll() == ["c"]


def test_truncation_in_place_starts_over(tmp_path: Path) -> None:
    log = new_session(tmp_path, "session_1", "a long first line\n")
    follower = RayletLogFollower(tmp_path)
    assert follower.poll() == ["a long first line"]
    with log.open("r+") as handle:
        handle.truncate(0)
        handle.write("x\n")
    assert follower.poll() == ["x"]


def test_a_new_session_is_read_from_its_start(tmp_path: Path) -> None:
    old = new_session(tmp_path, "session_1", "old 1\n")
    follower = RayletLogFollower(tmp_path, start_at_end=True)
    assert follower.poll() == []  # existing content skipped
    append(old, "old 2\n")
    new_session(tmp_path, "session_2", "new 1\nnew 2\n")
    assert follower.poll() == ["old 2", "new 1", "new 2"]
    assert follower.sessions == 1


def test_start_at_end_skips_a_partial_last_line(tmp_path: Path) -> None:
    log = new_session(tmp_path, "session_1", "old\nhalf of a li")
    follower = RayletLogFollower(tmp_path, start_at_end=True)
    assert follower.poll() == []
    append(log, "ne\nfresh\n")
    assert follower.poll() == ["fresh"]


def test_start_at_end_reads_a_file_created_later_from_its_start(tmp_path: Path) -> None:
    follower = RayletLogFollower(tmp_path, start_at_end=True)
    assert follower.poll() == []
    new_session(tmp_path, "session_1", "first\n")
    assert follower.poll() == ["first"]


def test_session_latest_briefly_missing(tmp_path: Path) -> None:
    log = new_session(tmp_path, "session_1", "a\n")
    follower = RayletLogFollower(tmp_path)
    assert follower.poll() == ["a"]
    (tmp_path / "session_latest").unlink()
    append(log, "b\n")
    assert follower.poll() == ["b"]


def test_bad_bytes_are_replaced(tmp_path: Path) -> None:
    log = new_session(tmp_path, "session_1", None)
    log.write_bytes(b"ok \xff\xfe\n")
    assert RayletLogFollower(tmp_path).poll() == ["ok \ufffd\ufffd"]


# -- the detector: follower + parser ------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_kill_split_across_polls_mid_line(tmp_path: Path) -> None:
    text = ONE_TASK.read_text()
    cut = text.index("task name=hog") + 5  # inside the victim's line
    log = new_session(tmp_path, "session_1", text[:cut])
    detector = RayMonitorKillDetector(tmp_path)
    assert detector.poll() == []
    append(log, text[cut:])
    kills = detector.poll()
    assert [(k.pid, k.task_name) for k in kills] == [(7727, "hog")]
    assert detector.poll() == []


def test_byte_by_byte_arrival_yields_each_kill_once(tmp_path: Path) -> None:
    text = TWO_WORKERS.read_text()
    log = new_session(tmp_path, "session_1", "")
    detector = RayMonitorKillDetector(tmp_path)
    kills: list[RayMonitorKill] = []
    step = 97
    for start in range(0, len(text), step):
        append(log, text[start:start + step])
        kills += detector.poll()
    assert [k.pid for k in kills] == [10226, 10160]


def test_a_record_cut_off_by_a_dying_raylet_is_flushed_after_a_quiet_period(tmp_path: Path) -> None:
    clock = FakeClock()
    log = new_session(tmp_path, "session_1", "")
    detector = RayMonitorKillDetector(tmp_path, flush_after_s=2.0, clock=clock)
    append(log, "\n".join([HEADER, SELECTED, "Top 10 memory users: PID\tMEM(GB)\tCOMMAND",
                           "4242\t2.49\tray::train_step"]) + "\n")
    assert detector.poll() == []
    clock.now += 1.0
    assert detector.poll() == []
    clock.now += 1.5
    (kill,) = detector.poll()
    assert kill.top == ((4242, gib("2.49"), "ray::train_step"),)
    clock.now += 10
    assert detector.poll() == []


def test_kills_across_rotation_and_a_new_session(tmp_path: Path) -> None:
    log = new_session(tmp_path, "session_1", ONE_TASK.read_text())
    detector = RayMonitorKillDetector(tmp_path)
    assert [k.pid for k in detector.poll()] == [7727]
    os.rename(log, log.with_name("raylet.out.1"))
    log.write_text(TWO_WORKERS.read_text())
    assert [k.pid for k in detector.poll()] == [10226, 10160]
    new_session(tmp_path, "session_2", IDLE_THEN_ACTOR.read_text())
    assert [k.pid for k in detector.poll()] == [11401, 11400]
    assert detector.poll() == []
    detector.close()
