"""`rayguard profile fetch` on this machine's files: real memray captures made here, found in a
directory (through local mode's links), listed with the runtime's index, copied with --out,
rendered with --flamegraph; and what a pod sends, from the pod's own command, unpacked safely."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from rayguard_node.errors import RayguardError
from rayguard_operator.local.cli import remove_all_but_profiles
from rayguard_operator.profile.cli import POD_COMMAND
from rayguard_operator.profile.fetch import copy_profiles, find_profiles, unpack_profiles

SESSION = "session_2026-01-01_00-00-00_000000_1"
PROGRAM = """
import sys, memray
def grow(chunks):
    chunks.append(b"x" * (4 << 20))
with memray.Tracker(sys.argv[1]):
    chunks = []
    for _ in range(3):
        grow(chunks)
"""


def capture(path: Path) -> Path:
    """A real memray file, of a tiny program run under memray."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", PROGRAM, str(path)], check=True, timeout=120)
    return path


def ray_temp(root: Path, pid: int = 4242) -> Path:
    """A pod's Ray temp dir: one session with a capture and the runtime's index, and Ray's link."""
    memray_dir = root / SESSION / "logs" / "memray"
    capture(memray_dir / f"{pid}-1191011.bin")
    (memray_dir / "profiles.json").write_text(json.dumps({"version": 1, "files": [
        {"file": f"{pid}-1191011.bin", "pid": pid, "start_ticks": 1191011, "names": ["hog"],
         "running": False, "reported": True}]}))
    (root / "session_latest").symlink_to(SESSION)
    (root / SESSION / "logs" / "raylet.out").write_text("not a profile\n")
    return root


def rayguard(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rayguard_operator.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_a_directory_is_listed_and_rendered(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "pods" / "demo-worker-cpu-0").mkdir(parents=True)
    temp = ray_temp(tmp_path / "rg-temp")
    (run_dir / "pods" / "demo-worker-cpu-0" / "ray-temp").symlink_to(temp)  # as local mode links it
    result = rayguard("profile", "fetch", str(run_dir), "--flamegraph", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout  # one file (session_latest is the same directory), its HTML
    assert lines[0].startswith(str(run_dir / "pods" / "demo-worker-cpu-0" / "ray-temp" / SESSION))
    assert "4242-1191011.bin" in lines[0] and "pid 4242  ran: hog" in lines[0]
    html = Path(lines[1].split("flamegraph: ", 1)[1])
    assert html.name == "4242-1191011.html" and html.stat().st_size > 10_000
    assert "grow" in html.read_text()


def test_out_copies_the_files_with_their_index(tmp_path: Path) -> None:
    source = ray_temp(tmp_path / "source")
    result = rayguard("profile", "fetch", str(source), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    copied = tmp_path / "out" / SESSION / "logs" / "memray"
    assert sorted(p.name for p in copied.iterdir()) == ["4242-1191011.bin", "profiles.json"]
    assert result.stdout.startswith(str(copied / "4242-1191011.bin"))


def test_an_empty_directory_says_so(tmp_path: Path) -> None:
    result = rayguard("profile", "fetch", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1 and "no memray profiles in" in result.stderr and result.stdout == ""
    missing = rayguard("profile", "fetch", str(tmp_path / "gone"), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr == f"rayguard profile: {tmp_path / 'gone'}: no such directory\n"


def test_a_broken_file_is_one_line_and_the_others_are_rendered(tmp_path: Path) -> None:
    (tmp_path / "1-2.bin").write_bytes(b"not memray")
    capture(tmp_path / "3-4.bin")
    result = rayguard("profile", "fetch", str(tmp_path), "--flamegraph", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("rayguard profile fetch: memray flamegraph") and result.stderr.count("\n") == 1
    assert "1-2.bin" in result.stderr and (tmp_path / "3-4.html").is_file() and not (tmp_path / "1-2.html").exists()
    assert f"flamegraph: {tmp_path / '3-4.html'}" in result.stdout


def test_local_mode_keeps_a_pods_profiles_and_only_them(tmp_path: Path) -> None:
    temp = ray_temp(tmp_path / "rg-temp")
    run_dir = tmp_path / "run"
    pod = run_dir / "pods" / "demo-worker-cpu-0"
    pod.mkdir(parents=True)
    (pod / "runtime.log").write_text("log")
    (pod / "ray-temp").symlink_to(temp)
    (run_dir / "pods" / "demo-head-0").mkdir()
    (run_dir / "secrets").mkdir()
    copied = copy_profiles(temp, pod / "profiles")
    assert copied == [pod / "profiles" / SESSION / "4242-1191011.bin"]
    assert (pod / "profiles" / SESSION / "profiles.json").is_file()
    remove_all_but_profiles(run_dir)
    left = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    assert left == ["pods", "pods/demo-worker-cpu-0", "pods/demo-worker-cpu-0/profiles",
                    f"pods/demo-worker-cpu-0/profiles/{SESSION}",
                    f"pods/demo-worker-cpu-0/profiles/{SESSION}/4242-1191011.bin",
                    f"pods/demo-worker-cpu-0/profiles/{SESSION}/profiles.json"]
    assert temp.is_dir()  # a link was removed, not what it pointed to
    assert [p.pid for p in find_profiles(run_dir)] == [4242]


def test_without_profiles_the_run_dir_goes(tmp_path: Path) -> None:
    (tmp_path / "run" / "pods" / "p").mkdir(parents=True)
    remove_all_but_profiles(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def pod_archive(temp: Path) -> bytes:
    """What the pod's command sends: run here, on a Ray temp dir laid out as a pod's."""
    command = POD_COMMAND[:-1] + [str(temp)]
    return subprocess.run(command, capture_output=True, check=True, timeout=60).stdout


def test_the_pods_command_sends_every_sessions_profiles_once(tmp_path: Path) -> None:
    temp = ray_temp(tmp_path / "ray", pid=10)
    older = temp / "session_2025-12-31_00-00-00_000000_1" / "logs" / "memray"
    capture(older / "11-5.bin")
    archive = tmp_path / "pod.tar"
    archive.write_bytes(pod_archive(temp))
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == [f"./session_2025-12-31_00-00-00_000000_1/logs/memray/11-5.bin",
                                          f"./{SESSION}/logs/memray/10-1191011.bin",
                                          f"./{SESSION}/logs/memray/profiles.json"]
    written = unpack_profiles(archive, tmp_path / "out" / "demo-worker-cpu-0")
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in written) == [
        "demo-worker-cpu-0/session_2025-12-31_00-00-00_000000_1/11-5.bin",
        f"demo-worker-cpu-0/{SESSION}/10-1191011.bin"]
    profiles = find_profiles(tmp_path / "out")
    assert [(p.pid, p.names) for p in profiles] == [(11, ()), (10, ("hog",))]  # older session first


def test_a_pod_without_profiles_sends_nothing_to_unpack(tmp_path: Path) -> None:
    (tmp_path / "ray").mkdir()
    archive = tmp_path / "pod.tar"
    archive.write_bytes(pod_archive(tmp_path / "ray"))
    assert unpack_profiles(archive, tmp_path / "out") == []
    archive.write_bytes(b"")
    assert unpack_profiles(archive, tmp_path / "out") == []
    archive.write_bytes(b"garbage" * 100)
    with pytest.raises(RayguardError, match="not a tar archive"):
        unpack_profiles(archive, tmp_path / "out")


def test_what_a_pod_sends_cannot_write_elsewhere(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        def add(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.size, info.type, info.linkname = (len(data) if kind == tarfile.REGTYPE else 0), kind, link
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add(f"{SESSION}/logs/memray/1-2.bin")  # the one good file
        add(f"../{SESSION}/logs/memray/3-4.bin")
        add(f"/etc/{SESSION}/logs/memray/5-6.bin")
        add(f"{SESSION}/logs/memray/../../../../evil.bin")
        add("session_latest/logs/memray/7-8.bin")
        add(f"{SESSION}/logs/memray/notes.txt")
        add(f"{SESSION}/logs/memray/9-10.bin", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add(f"{SESSION}/logs/memray/11-12.bin", kind=tarfile.LNKTYPE, link=f"{SESSION}/logs/memray/1-2.bin")
    archive = tmp_path / "pod.tar"
    archive.write_bytes(buffer.getvalue())
    out = tmp_path / "out"
    assert unpack_profiles(archive, out) == [out / SESSION / "1-2.bin"]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == \
        ["out/" + f"{SESSION}/1-2.bin", "pod.tar"]
    assert not os.path.exists(tmp_path.parent / "evil.bin")
