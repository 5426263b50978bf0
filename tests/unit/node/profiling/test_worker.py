"""The worker hook for real: a Python process that runs as Ray's `default_worker.py` (its title
set with Ray's own setproctitle), with the environment the runtime gives `ray start`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import memray
import pytest

from rayguard_node.contract.profiles import parse_file_name, profile_dir
from rayguard_node.profiling.hook import environment

# Ray's worker sets its title per task (`ray::<task>`); this stand-in does the same, allocates
# in `grow` called by `hog`, and ends as the test says: normally, or SIGKILLed like a guard kill.
FAKE_WORKER = """
import os, signal, sys, time
from ray._raylet import setproctitle

def grow(chunks):
    if sys.argv[4] == "many":  # many allocations above pymalloc's 512 bytes: a fast-growing file
        chunks.append([bytes(600 + i % 7) for i in range(2000)])
    else:
        chunks.append(b"x" * (8 << 20))

def hog(seconds):
    chunks = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        grow(chunks)
        time.sleep(0.02)
        if len(chunks) > 8:
            chunks.pop(0)
    return chunks

setproctitle("ray::IDLE")
time.sleep(0.2)
setproctitle(sys.argv[1])
hog(float(sys.argv[2]))
print("PID", os.getpid(), flush=True)
if sys.argv[3] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def run_worker(tmp_path: Path, title: str, seconds: float = 0.6, end: str = "exit",
               match: tuple[str, ...] = ("hog*",), cap: int = 256 << 20,
               extra_path: str = "", allocations: str = "big") -> tuple[subprocess.CompletedProcess[str], list[Path]]:
    script = tmp_path / "workers" / "default_worker.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(FAKE_WORKER)
    temp = tmp_path / "ray"
    session = temp / "session_2026-01-01_00-00-00_000000_1"
    session.mkdir(parents=True, exist_ok=True)
    if not (temp / "session_latest").exists():
        (temp / "session_latest").symlink_to(session.name)
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if extra_path:
        base["PYTHONPATH"] = extra_path
    env = {**base, **environment(temp, match, cap, base)}
    result = subprocess.run([sys.executable, str(script), title, str(seconds), end, allocations], env=env,
                            capture_output=True, text=True, timeout=120)
    directory = session / "logs" / "memray"
    return result, sorted(directory.glob("*.bin")) if directory.is_dir() else []


def peak_stack(path: Path) -> tuple[int, list[str]]:
    reader = memray.FileReader(str(path))
    biggest = max(reader.get_high_watermark_allocation_records(), key=lambda a: a.size)
    return biggest.size, [frame[0] for frame in biggest.stack_trace()]


@pytest.mark.parametrize("end", ["exit", "kill"])
def test_a_matching_worker_records_with_python_stacks(tmp_path: Path, end: str) -> None:
    result, files = run_worker(tmp_path, "ray::hog_big", end=end)
    assert ("PID" in result.stdout), result.stderr[-2000:]
    pid = int(result.stdout.split("PID", 1)[1].split()[0])
    assert len(files) == 1 and parse_file_name(files[0].name)[0] == pid, (files, result.stderr)  # type: ignore[index]
    assert files[0].parent.resolve() == (tmp_path / "ray" / "session_2026-01-01_00-00-00_000000_1" / "logs"
                                         / "memray").resolve()  # the session's real dir
    size, stack = peak_stack(files[0])
    # A Tracker started while `site` imports sitecustomize would record these allocations
    # with no Python stack at all: the frames are the proof the hook starts it right.
    assert size >= 8 << 20 and stack[:2] == ["grow", "hog"], stack
    assert result.stderr.strip() == "", result.stderr  # nothing said when all is well


def test_a_worker_that_runs_nothing_matching_records_nothing(tmp_path: Path) -> None:
    result, files = run_worker(tmp_path, "ray::train", seconds=0.3)
    assert "PID" in result.stdout and files == [], result.stderr


def test_an_actor_class_glob_matches_its_methods(tmp_path: Path) -> None:
    result, files = run_worker(tmp_path, "ray::Holder.grow", match=("Holder",), seconds=0.3)
    assert "PID" in result.stdout and len(files) == 1, result.stderr


def test_a_worker_stops_recording_at_its_cap(tmp_path: Path) -> None:
    cap = 48 << 10
    result, capped = run_worker(tmp_path / "capped", "ray::hog", seconds=3.0, cap=cap, allocations="many")
    assert "recording stopped" in result.stderr and f"(cap {cap})" in result.stderr, result.stderr
    _result, free = run_worker(tmp_path / "free", "ray::hog", seconds=3.0, allocations="many")
    # Checked every 0.25 s: it may pass the cap by that much recording, then it stops growing.
    assert len(capped) == 1 and len(free) == 1
    assert capped[0].stat().st_size >= cap and capped[0].stat().st_size < free[0].stat().st_size / 2
    memray.FileReader(str(capped[0]))  # what was recorded still reads


def test_a_users_sitecustomize_still_runs(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    marker = tmp_path / "marker"
    (mine / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    result, files = run_worker(tmp_path, "ray::hog", seconds=0.3, extra_path=str(mine))
    assert marker.read_text() == "ran" and len(files) == 1, result.stderr
    # ... and in a process that is not a worker, where the hook does nothing else.
    marker.unlink()
    env = {**os.environ, **environment(tmp_path / "ray", ("*",), 1 << 20, {"PYTHONPATH": str(mine)})}
    subprocess.run([sys.executable, "-c", "import sitecustomize"], env=env, check=True, timeout=60)
    assert marker.read_text() == "ran"


def test_a_broken_hook_never_stops_the_worker(tmp_path: Path) -> None:
    blocked = tmp_path / "ray"
    blocked.mkdir()
    (blocked / "session_latest").write_text("a file where a directory should be")
    result, _files = run_worker(tmp_path, "ray::hog", seconds=0.3)
    assert result.returncode == 0 and "PID" in result.stdout
    assert "rayguard: memray profiling stopped" in result.stderr
