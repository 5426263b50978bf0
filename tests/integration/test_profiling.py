"""memray profiles end to end, through `rayguard local up`: a worker group that profiles `hog*`,
real Ray, real cgroups, a task killed for its memory, the Event naming its profile, and
`rayguard profile fetch` rendering it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import memray
import pytest
import yaml

from rayguard_node.cgroup.scratch import why_not_writable

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]

DRIVER = """
import os, time, ray
ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)

def grow(chunks):
    chunks.append(b"x" * (64 << 20))

@ray.remote(max_retries=0)
def hog():
    chunks = []
    while True:
        grow(chunks)
        time.sleep(0.1)

@ray.remote(max_calls=1)  # its worker exits after it: a worker that never ran hog*
def fits():
    time.sleep(0.5)
    return len(b"x" * (100 << 20))

print("FITS", ray.get(fits.remote(), timeout=120), flush=True)
try:
    ray.get(hog.remote(), timeout=180)
except Exception as error:
    print("HOG", type(error).__name__, flush=True)
"""


def test_a_killed_profiled_task_names_its_profile_which_renders(tmp_path: Path) -> None:
    reason = why_not_writable()
    if reason is not None:
        pytest.skip(f"needs a writable memory cgroup (v1 or v2): {reason}")
    body = yaml.safe_load((ROOT / "examples" / "raycluster-minimal.yaml").read_text())
    body["metadata"]["name"] = "profiling"
    body["spec"]["workerGroups"][0]["memory"] = {"profiling": {"enabled": True, "match": ["hog*"]}}
    cluster, driver = tmp_path / "cluster.yaml", tmp_path / "driver.py"
    cluster.write_text(yaml.safe_dump(body))
    driver.write_text(DRIVER)
    result = subprocess.run([sys.executable, "-m", "rayguard_operator.cli", "local", "up", str(cluster), "--",
                             sys.executable, str(driver)], capture_output=True, text=True, timeout=420, cwd=tmp_path)
    out = result.stdout
    kept = re.search(r"memray profiles of (\d+) worker\(s\) kept in (\S+);", out)
    run_dir = Path(kept.group(2)) if kept else None
    try:
        assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
        assert "FITS 104857600" in out and "HOG " in out, out[-4000:]
        events = [line for line in out.splitlines() if line.startswith("Event  Warning")]
        messages = [out.split(line, 1)[1].strip().splitlines()[0] for line in events]
        hog_kills = [m for m in messages if "killed ray::hog (pid " in m]
        assert hog_kills, out[-4000:]
        message = hog_kills[0]
        pid = re.search(r"killed ray::hog \(pid (\d+)", message).group(1)  # type: ignore[union-attr]
        named = re.search(r"memray profile: (\S+) \(rayguard profile fetch\)\.", message)
        assert named, message
        assert re.fullmatch(rf".*/session_[0-9_-]+/logs/memray/{pid}-[0-9]+\.bin", named.group(1)), named.group(1)
        # The pod's Ray temp dir is gone with the pod; its profiles were kept in the run dir, and
        # only the worker that ran hog recorded (fits ran alone in a worker that then exited).
        assert kept and kept.group(1) == "1" and run_dir is not None, out[-2000:]
        [kept_file] = list(run_dir.glob("pods/profiling-worker-cpu-0/profiles/session_*/*.bin"))
        assert kept_file.name == Path(named.group(1)).name
        assert not (run_dir / "secrets").exists()  # without --keep-logs only the profiles stay

        fetched = subprocess.run([sys.executable, "-m", "rayguard_operator.cli", "profile", "fetch", str(run_dir),
                                  "--flamegraph"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert fetched.returncode == 0, fetched.stderr
        lines = fetched.stdout.splitlines()
        assert lines[0].startswith(str(kept_file)) and f"pid {pid}  ran: hog" in lines[0], fetched.stdout
        html = Path(lines[1].split("flamegraph: ", 1)[1])
        assert html.is_file() and html.suffix == ".html" and "grow" in html.read_text()

        # What the flame graph shows: the hog's growth, with its Python stack.
        reader = memray.FileReader(str(kept_file))
        peak = max(reader.get_high_watermark_allocation_records(), key=lambda a: a.size)
        assert peak.size >= 1 << 30 and [f[0] for f in peak.stack_trace()[:2]] == ["grow", "hog"]
    finally:
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
