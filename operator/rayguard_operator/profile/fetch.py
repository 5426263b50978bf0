"""memray profiles on this machine: found in a directory, unpacked from a pod's tar stream,
copied out of a local pod's Ray temp dir, listed with what each worker ran, rendered as flame
graphs with `memray flamegraph`.

File names and places are the pod's contract (`rayguard_node.contract.profiles`): a worker's
file is `<pid>-<start ticks>.bin` in `<ray temp dir>/session_*/logs/memray/`, beside the
runtime's `profiles.json`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rayguard_node.contract.profiles import INDEX_NAME, SESSION, SUBDIR, parse_file_name
from rayguard_node.errors import RayguardError
from rayguard_node.sizing.quantity import format_bytes

INDEX_MAX_BYTES = 4 << 20
FLAMEGRAPH_TIMEOUT_S = 600


@dataclass(frozen=True)
class Profile:
    """One worker's file, and what the runtime's index says of it (empty when it has none)."""

    path: Path
    size: int
    pid: int
    names: tuple[str, ...] = ()
    running: bool | None = None

    def line(self) -> str:
        ran = ", ".join(self.names) if self.names else "no task or actor seen"
        state = " (still running)" if self.running else ""
        return f"{self.path}  {format_bytes(self.size)}  pid {self.pid}  ran: {ran}{state}"


def read_index(directory: Path) -> dict[str, dict[str, Any]]:
    """profiles.json of one directory, by file name; {} when absent or unreadable."""
    try:
        path = directory / INDEX_NAME
        if path.stat().st_size > INDEX_MAX_BYTES:
            return {}
        data = json.loads(path.read_text())
        return {str(f["file"]): f for f in data["files"] if isinstance(f, dict) and "file" in f}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def find_profiles(directory: Path) -> list[Profile]:
    """Every profile file under `directory`, through links (a local pod's `ray-temp`), each
    real directory once (Ray's `session_latest` is a link to a session that is also listed)."""
    found: list[Profile] = []
    seen: set[str] = set()
    for current, dirs, files in os.walk(directory, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        names = sorted(f for f in files if parse_file_name(f) is not None)
        if not names:
            continue
        index = read_index(Path(current))
        for name in names:
            path = Path(current) / name
            try:
                size = path.stat().st_size
            except OSError:
                continue
            entry = index.get(name, {})
            pid = parse_file_name(name)[0]  # type: ignore[index]
            found.append(Profile(path, size, pid, tuple(str(n) for n in entry.get("names") or ()),
                                 entry.get("running") if isinstance(entry.get("running"), bool) else None))
    return found


def copy_profiles(ray_temp_dir: Path, destination: Path) -> list[Path]:
    """A local pod's profiles, out of its Ray temp dir (which local mode removes) into
    `destination/<session>/`. Returns the files copied."""
    copied: list[Path] = []
    try:
        sessions = sorted(p for p in ray_temp_dir.iterdir() if SESSION.match(p.name) and not p.is_symlink())
    except OSError:
        return copied
    for session in sessions:
        source = session.joinpath(*SUBDIR)
        if not source.is_dir():
            continue
        for path in sorted(source.iterdir()):
            if parse_file_name(path.name) is None and path.name != INDEX_NAME:
                continue
            target = destination / session.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            if path.name != INDEX_NAME:
                copied.append(target)
    return copied


def copy_tree(profiles: list[Profile], source: Path, destination: Path) -> list[Profile]:
    """`--out` for a local directory: the files (and their indexes) at the same relative paths."""
    copied = []
    for profile in profiles:
        target = destination / profile.path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(profile.path, target)
        index = profile.path.parent / INDEX_NAME
        if index.is_file():
            shutil.copy2(index, target.parent / INDEX_NAME)
        copied.append(Profile(target, profile.size, profile.pid, profile.names, profile.running))
    return copied


def unpack_profiles(archive: Path, destination: Path) -> list[Path]:
    """A pod's `tar` of `session_*/logs/memray/*` into `destination/<session>/<file>`.

    The archive comes from a container, so it is read as untrusted: only regular files at
    exactly that depth, named as profiles or the index, are written, and only by the names
    checked here (no path of the archive's own choosing, no links, no devices).
    """
    written: list[Path] = []
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for member in tar:
                parts = [p for p in PurePosixPath(member.name).parts if p not in (".", "")]
                if not member.isreg() or len(parts) != 2 + len(SUBDIR) or tuple(parts[1:-1]) != SUBDIR:
                    continue
                session, name = parts[0], parts[-1]
                if not SESSION.match(session) or (parse_file_name(name) is None and name != INDEX_NAME):
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                target = destination / session / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                if name != INDEX_NAME:
                    written.append(target)
    except tarfile.ReadError:
        if archive.stat().st_size:  # empty: the pod had no profile directory
            raise RayguardError(f"{archive}: not a tar archive (what the pod sent could not be read)") from None
    return written


def need_memray() -> None:
    if importlib.util.find_spec("memray") is None:
        raise RayguardError("--flamegraph needs memray where rayguard runs: pip install 'rayguard[profile]'")


def flamegraph(profile: Path, output: Path | None = None) -> Path:
    """`memray flamegraph` of one file, with its assets inlined (it opens without a network)."""
    need_memray()
    html = output or profile.with_suffix(".html")
    result = subprocess.run([sys.executable, "-m", "memray", "flamegraph", "--force", "--no-web",
                             "-o", str(html), str(profile)],
                            capture_output=True, text=True, timeout=FLAMEGRAPH_TIMEOUT_S)
    if result.returncode != 0 or not html.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RayguardError(f"memray flamegraph {profile} failed (status {result.returncode}): {tail[0]}")
    return html
