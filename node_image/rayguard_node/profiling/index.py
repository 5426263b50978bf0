"""The runtime's index of the pod's memray files: what each recorded worker ran, the disk cap,
and which file a kill report names. Polled from the monitor loop.

A file exists only for a worker that ran a task or actor the globs match (the worker hook
starts recording then: `worker.py`); it is `<pid>-<start ticks>.bin`
(`contract.profiles.file_name`). The process scans the monitor loop already makes (every
0.5 s, every tick near the threshold) name what each worker runs, from its title; a kill report
adds its victim's name. `profiles.json` beside the files lists each file, its pid, the names
seen and whether it still runs; `rayguard profile fetch` copies and prints it.

The cap: while the files take more than `max_bytes`, the files of exited workers are deleted,
those no report named first, oldest first. A running worker's file is never deleted (its disk
would not come back while the worker holds it open); each worker stops recording at
`file_max_bytes`, a quarter of the cap.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from rayguard_node.cgroup.processes import ProcessMemory
from rayguard_node.contract.profiles import INDEX_NAME, file_name, parse_file_name, profile_dir
from rayguard_node.profiling.hook import task_name

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1 << 30
MIN_MAX_BYTES = 64 << 20
FILE_SHARE = 4  # one worker may take a quarter of the pod's profile disk
MAX_GLOBS, MAX_GLOB_CHARS = 16, 128


@dataclass(frozen=True)
class ProfileSettings:
    enabled: bool = False
    match: tuple[str, ...] = ("*",)
    max_bytes: int = DEFAULT_MAX_BYTES

    @property
    def file_max_bytes(self) -> int:
        return self.max_bytes // FILE_SHARE


@dataclass
class Entry:
    """One file: whose it is, what that worker ran, whether it still runs."""

    pid: int
    start_ticks: int
    names: set[str] = field(default_factory=set)
    running: bool = True
    reported: bool = False  # a kill report named this file
    size: int = 0

    def record(self) -> dict[str, object]:
        return {"pid": self.pid, "start_ticks": self.start_ticks, "names": sorted(self.names),
                "running": self.running, "reported": self.reported}


def process_alive(procfs_root: Path, pid: int, start_ticks: int) -> bool:
    try:
        with open(procfs_root / str(pid) / "stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return len(fields) > 19 and int(fields[19]) == start_ticks and fields[0] != b"Z"


class ProfileIndex:
    def __init__(self, ray_temp_dir: Path, settings: ProfileSettings,
                 last_scan: Callable[[], Iterable[ProcessMemory]], procfs_root: Path = Path("/proc")) -> None:
        self.link = profile_dir(ray_temp_dir)
        self.settings = settings
        self.last_scan = last_scan
        self.procfs_root = procfs_root
        self.entries: dict[str, Entry] = {}
        self._written: object = None
        self._over_cap_warned = False

    @property
    def directory(self) -> Path:
        """The current session's directory (`session_latest` is a link Ray moves)."""
        return Path(os.path.realpath(self.link))

    def profile_of(self, pid: int | None, title: str, start_ticks: int | None = None) -> str | None:
        """A kill report's victim's file, as the pod sees it, if that worker was recorded. With
        `start_ticks` only that process's file; without, the pid's newest."""
        if pid is None:
            return None
        directory = self.directory
        if start_ticks is not None:
            name = file_name(pid, start_ticks)
            found = name if (directory / name).is_file() else None
        else:
            found = self._newest_file(directory, pid)
        if found is None:
            return None
        entry = self.entries.setdefault(found, Entry(pid, parse_file_name(found)[1]))  # type: ignore[index]
        if (ran := task_name(title)) is not None:
            entry.names.add(ran)
        entry.reported = True
        return str(directory / found)

    @staticmethod
    def _newest_file(directory: Path, pid: int) -> str | None:
        try:
            mine = [(parsed[1], n) for n in os.listdir(directory)
                    if (parsed := parse_file_name(n)) is not None and parsed[0] == pid]
        except OSError:
            return None
        return max(mine)[1] if mine else None

    def poll(self) -> None:
        directory = self.directory
        try:
            names = os.listdir(directory)
        except OSError:
            return  # no worker has recorded yet
        on_disk = {n: parsed for n in names if (parsed := parse_file_name(n)) is not None}
        self.entries = {n: e for n, e in self.entries.items() if n in on_disk}
        scanned = {(p.pid, p.start_ticks): p for p in self.last_scan()}
        for name, (pid, ticks) in on_disk.items():
            entry = self.entries.setdefault(name, Entry(pid, ticks))
            process = scanned.get((pid, ticks))
            if process is not None and (ran := task_name(process.name)) is not None:
                entry.names.add(ran)
            entry.running = process is not None or process_alive(self.procfs_root, pid, ticks)
            try:
                entry.size = (directory / name).stat().st_size
            except OSError:
                entry.size = 0
        self._cap(directory)
        self._write_index(directory)

    def _cap(self, directory: Path) -> None:
        total = sum(e.size for e in self.entries.values())
        exited = sorted((n for n, e in self.entries.items() if not e.running),
                        key=lambda n: (self.entries[n].reported, self.entries[n].start_ticks))
        for name in exited:
            if total <= self.settings.max_bytes:
                break
            try:
                (directory / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                log.warning("cannot delete memray file %s: %s", directory / name, error)
                continue
            log.info("deleted memray file %s: the pod's files were over %d bytes", name, self.settings.max_bytes)
            total -= self.entries.pop(name).size
        over = total > self.settings.max_bytes
        if over and not self._over_cap_warned:
            log.warning("running workers' memray files take %d bytes, over the cap of %d; each stops"
                        " recording at %d", total, self.settings.max_bytes, self.settings.file_max_bytes)
        self._over_cap_warned = over

    def index(self) -> dict[str, object]:
        files = [{"file": name, **entry.record()}
                 for name, entry in sorted(self.entries.items(), key=lambda item: item[1].start_ticks)]
        return {"version": 1, "match": list(self.settings.match), "max_bytes": self.settings.max_bytes,
                "file_max_bytes": self.settings.file_max_bytes, "files": files}

    def _write_index(self, directory: Path) -> None:
        """Written when what it says changed (it holds no sizes: those are the files')."""
        content = self.index()
        if content == self._written:
            return
        temporary = directory / f".{INDEX_NAME}.tmp"
        try:
            temporary.write_text(json.dumps(content, indent=1) + "\n")
            os.replace(temporary, directory / INDEX_NAME)
        except OSError as error:
            log.warning("cannot write %s: %s", directory / INDEX_NAME, error)
            return
        self._written = content
