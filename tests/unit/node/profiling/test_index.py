"""The runtime's index of memray files: names from the scans, running or not, the cap, the
file a kill report names, and profiles.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayguard_node.cgroup.processes import IDLE_WORKER, WORKER, ProcessMemory
from rayguard_node.profiling.index import ProfileIndex, ProfileSettings

SESSION = "session_2026-01-01_00-00-00_000000_1"
MiB = 1 << 20


class Pod:
    """A Ray temp dir with a session, a fake procfs, and the latest scan."""

    def __init__(self, tmp_path: Path, max_bytes: int = 64 * MiB) -> None:
        self.temp = tmp_path / "ray"
        self.dir = self.temp / SESSION / "logs" / "memray"
        self.dir.mkdir(parents=True)
        (self.temp / "session_latest").symlink_to(SESSION)
        self.proc = tmp_path / "proc"
        self.proc.mkdir()
        self.scan: list[ProcessMemory] = []
        self.index = ProfileIndex(self.temp, ProfileSettings(True, ("hog*",), max_bytes), lambda: self.scan,
                                  self.proc)

    def worker(self, pid: int, ticks: int, title: str, size: int = 1024, alive: bool = True,
               in_scan: bool = True) -> Path:
        path = self.dir / f"{pid}-{ticks}.bin"
        path.write_bytes(b"\0" * size)
        if alive:
            (self.proc / str(pid)).mkdir(exist_ok=True)
            (self.proc / str(pid) / "stat").write_text(f"{pid} (python) S " + " ".join(["0"] * 18) + f" {ticks} 0\n")
        if in_scan:
            cls = IDLE_WORKER if title == "ray::IDLE" else WORKER
            self.scan.append(ProcessMemory(pid, title, cls, 10 * MiB, 0, ticks))
        return path

    def exits(self, pid: int) -> None:
        self.scan = [p for p in self.scan if p.pid != pid]
        for child in (self.proc / str(pid)).iterdir():
            child.unlink()
        (self.proc / str(pid)).rmdir()

    def files(self) -> dict[str, dict[str, object]]:
        data = json.loads((self.dir / "profiles.json").read_text())
        return {f["file"]: f for f in data["files"]}


def test_names_come_from_the_scans_and_the_index_says_them(tmp_path: Path) -> None:
    pod = Pod(tmp_path)
    pod.worker(10, 500, "ray::hog")
    pod.worker(11, 600, "ray::IDLE")
    pod.index.poll()
    pod.scan = [ProcessMemory(10, "ray::hog_two", WORKER, MiB, 0, 500),
                ProcessMemory(11, "ray::Holder.grow", WORKER, MiB, 0, 600)]
    pod.index.poll()
    files = pod.files()
    assert files["10-500.bin"]["names"] == ["hog", "hog_two"] and files["10-500.bin"]["running"] is True
    assert files["11-600.bin"]["names"] == ["Holder.grow"]  # IDLE is no name
    data = json.loads((pod.dir / "profiles.json").read_text())
    assert (data["match"], data["max_bytes"], data["file_max_bytes"]) == (["hog*"], 64 * MiB, 16 * MiB)


def test_a_reused_pid_is_not_the_recorded_worker(tmp_path: Path) -> None:
    pod = Pod(tmp_path)
    pod.worker(10, 500, "ray::hog", alive=False, in_scan=False)
    pod.scan = [ProcessMemory(10, "ray::other", WORKER, MiB, 0, 999)]  # same pid, started later
    pod.index.poll()
    assert pod.files()["10-500.bin"] == {"file": "10-500.bin", "pid": 10, "start_ticks": 500, "names": [],
                                         "running": False, "reported": False}


def test_a_worker_missing_from_the_last_scan_may_still_run(tmp_path: Path) -> None:
    pod = Pod(tmp_path)
    pod.worker(10, 500, "ray::hog", in_scan=False)  # started after the scan
    pod.index.poll()
    assert pod.files()["10-500.bin"]["running"] is True


def test_the_cap_deletes_exited_workers_files_unreported_and_oldest_first(tmp_path: Path) -> None:
    pod = Pod(tmp_path, max_bytes=64 * MiB)
    pod.worker(10, 100, "ray::hog", size=20 * MiB)  # the oldest, but a kill report names it
    pod.worker(11, 200, "ray::hog", size=20 * MiB)
    pod.worker(12, 300, "ray::hog", size=20 * MiB)
    running = pod.worker(13, 400, "ray::hog", size=30 * MiB)
    pod.index.poll()  # 90 MiB, but all still run: nothing can go
    assert len(list(pod.dir.glob("*.bin"))) == 4
    assert pod.index.profile_of(10, "ray::hog", 100) is not None
    for pid in (10, 11, 12):
        pod.exits(pid)
    pod.index.poll()  # 90 MiB: 11 goes (unreported, oldest); 70 MiB: 12 goes; 50 MiB
    assert sorted(p.name for p in pod.dir.glob("*.bin")) == ["10-100.bin", "13-400.bin"]
    assert set(pod.files()) == {"10-100.bin", "13-400.bin"} and running.exists()


def test_a_kill_report_gets_the_victims_file(tmp_path: Path) -> None:
    pod = Pod(tmp_path)
    pod.worker(10, 500, "ray::hog")
    pod.worker(10, 400, "ray::hog", alive=False, in_scan=False)  # an older process with that pid
    expected = str((pod.dir / "10-500.bin").resolve())
    assert pod.index.profile_of(10, "ray::hog_big", 500) == expected
    assert pod.index.profile_of(10, "ray::hog_big", None) == expected  # the newest
    assert pod.index.profile_of(10, "ray::hog", 999) is None  # that process never recorded
    assert pod.index.profile_of(11, "ray::hog", None) is None and pod.index.profile_of(None, "x") is None
    pod.index.poll()
    assert pod.files()["10-500.bin"]["reported"] is True
    assert pod.files()["10-500.bin"]["names"] == ["hog", "hog_big"]


def test_the_report_path_is_the_sessions_own_not_the_link(tmp_path: Path) -> None:
    pod = Pod(tmp_path)
    pod.worker(10, 500, "ray::hog")
    assert "session_latest" not in str(pod.index.profile_of(10, "ray::hog", 500))
    assert SESSION in str(pod.index.profile_of(10, "ray::hog", 500))


def test_nothing_to_do_before_a_worker_recorded(tmp_path: Path) -> None:
    pod = Pod(tmp_path)
    pod.dir.rmdir()
    pod.index.poll()
    assert pod.index.profile_of(10, "ray::hog") is None


def test_the_index_is_written_only_when_it_changes(tmp_path: Path) -> None:
    pod = Pod(tmp_path)
    pod.worker(10, 500, "ray::hog")
    pod.index.poll()
    index = pod.dir / "profiles.json"
    index.write_text("touched")
    pod.index.poll()
    assert index.read_text() == "touched"
    pod.scan = [ProcessMemory(10, "ray::hog2", WORKER, MiB, 0, 500)]
    pod.index.poll()
    assert pod.files()["10-500.bin"]["names"] == ["hog", "hog2"]


@pytest.mark.parametrize("max_bytes, share", [(64 * MiB, 16 * MiB), (1 << 30, 256 * MiB)])
def test_one_worker_may_take_a_quarter(max_bytes: int, share: int) -> None:
    assert ProfileSettings(True, ("*",), max_bytes).file_max_bytes == share
