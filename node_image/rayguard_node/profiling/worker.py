"""In a Ray worker, from the hook's `sitecustomize`: a thread that watches the worker's own
process title and, once the worker runs a task or actor the globs match, records the rest of
the process under a memray Tracker into `<pid>-<start ticks>.bin`.

Why a title and a thread, and not a Tracker from the first line: a Tracker started while
`site` imports `sitecustomize` records allocations but loses every Python stack after that
import returns (memray 1.20, Python 3.11, tried here); one started from another thread is what
memray supports, and the main thread's stack is then taken as it is. Waiting for a matching
name also spares every other worker the cost: they only read their title every `POLL_S`.
So the first `POLL_S` of the first matching task goes unrecorded, and a matching task shorter
than that may start nothing; from then on everything the process does is recorded, whatever it
runs next.

memray writes its file as it goes, so a worker that is SIGKILLed (the guard, Ray's monitor, a
quota or the kernel) leaves a file memray reads. Only allocations through the C allocators are
recorded (memray's default: not each small Python object), without native frames. At its cap a
worker stops recording and says so on stderr (its Ray log). Nothing here may break the worker:
errors are printed, never raised.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any, Callable, Mapping

from rayguard_node.contract.profiles import file_name
from rayguard_node.profiling.hook import DIR_ENV, FILE_MAX_ENV, MATCH_ENV, name_matches, task_name

POLL_S = 0.02
CAP_CHECK_S = 0.25


def own_title() -> str:
    with open("/proc/self/cmdline", "rb") as handle:
        return handle.read(4096).split(b"\0", 1)[0].decode(errors="replace")


def own_start_ticks() -> int:
    with open("/proc/self/stat", "rb") as handle:
        return int(handle.read().rsplit(b")", 1)[1].split()[19])


class Watcher:
    """Waits for a matching title, records until the cap or the interpreter's exit."""

    def __init__(self, directory: str, globs: tuple[str, ...], cap_bytes: int,
                 title: Callable[[], str] = own_title) -> None:
        self.directory = directory
        self.globs = globs
        self.cap_bytes = cap_bytes
        self.title = title
        self.done = threading.Event()
        self._lock = threading.Lock()
        self.tracker: Any = None
        self.path: str | None = None
        self.started_by: str | None = None
        self.stopped = False

    def run(self) -> None:
        try:
            while not self.done.wait(POLL_S):
                name = task_name(self.title())
                if name is not None and name_matches(name, self.globs):
                    self.begin(name)
                    break
            while self.tracker is not None and not self.done.wait(CAP_CHECK_S):
                if self.over_cap():
                    return
        except Exception as error:  # noqa: BLE001 (the worker goes on, unrecorded)
            print(f"rayguard: memray profiling stopped: {type(error).__name__}: {error}",
                  file=sys.stderr, flush=True)

    def begin(self, name: str) -> None:
        import memray  # only in a worker that records: its import takes about 0.1 s

        directory = os.path.realpath(self.directory)  # this session's dir, not a later one's
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, file_name(os.getpid(), own_start_ticks()))
        destination = memray.FileDestination(path, overwrite=True, compress_on_exit=False)
        tracker = memray.Tracker(destination=destination, follow_fork=False)
        with self._lock:
            if self.done.is_set():
                return
            tracker.__enter__()  # from this thread: memray hooks every thread's stack
            self.tracker, self.path, self.started_by = tracker, path, name

    def over_cap(self) -> bool:
        try:
            size = os.stat(str(self.path)).st_size
        except OSError:
            return True
        if size < self.cap_bytes:
            return False
        self.stop()
        print(f"rayguard: memray file {self.path} reached {size} bytes (cap {self.cap_bytes});"
              " recording stopped", file=sys.stderr, flush=True)
        return True

    def stop(self) -> None:
        """Once: at the cap, or when the interpreter exits (the file is then complete)."""
        self.done.set()
        with self._lock:
            if self.tracker is None or self.stopped:
                return
            self.stopped = True
            self.tracker.__exit__(None, None, None)  # memray unhooks every thread


def start(environ: Mapping[str, str] = os.environ) -> Watcher | None:
    """Watch this worker; None when the runtime did not ask for profiles."""
    directory = environ.get(DIR_ENV)
    if not directory:
        return None
    globs = tuple(glob for glob in (environ.get(MATCH_ENV) or "*").split(",") if glob)
    cap = int(environ.get(FILE_MAX_ENV) or 0) or sys.maxsize
    watcher = Watcher(directory, globs, cap)
    atexit.register(watcher.stop)
    threading.Thread(target=watcher.run, name="rayguard-memray", daemon=True).start()
    return watcher
