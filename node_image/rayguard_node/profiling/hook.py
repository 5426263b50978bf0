"""The environment `ray start` gets so that Ray workers record memray profiles, and how the
hook recognises a Ray worker and the tasks it runs. Where the files go and how they are named
is in `contract/profiles.py` (the operator reads them back).

The mechanism is Python's own `sitecustomize` (the `site` module imports the first one on
`sys.path` at interpreter start): the directory `site/` of this package, which holds only a
`sitecustomize.py`, goes first on the PYTHONPATH of `ray start`. The raylet passes its
environment to the workers it starts, so every Ray worker runs that hook; in a Ray worker
(`default_worker.py`), and only when `DIR_ENV` is set, it starts `worker.Watcher`. No user code
changes.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Iterable, Mapping

from rayguard_node.contract.profiles import profile_dir

# Between the runtime and its own hook only (not settings: a user never sets them).
DIR_ENV = "_RAYGUARD_MEMRAY_DIR"
MATCH_ENV = "_RAYGUARD_MEMRAY_MATCH"
FILE_MAX_ENV = "_RAYGUARD_MEMRAY_FILE_MAX_BYTES"
HOOK_DIR = Path(__file__).resolve().parent / "site"
WORKER_SCRIPT = "default_worker.py"  # ray/_private/workers/default_worker.py, Ray's Python worker
TITLE_PREFIX = "ray::"
IDLE_TITLE = "IDLE"  # ray::IDLE, ray::IDLE_SpillWorker, ...: between tasks, or an IO worker


def is_ray_worker(argv: list[str]) -> bool:
    """A Ray worker's interpreter runs `.../ray/_private/workers/default_worker.py`. The
    `setup_worker.py` that execs it names it only as an argument, so only argv[0] counts."""
    return bool(argv) and os.path.basename(argv[0]) == WORKER_SCRIPT


def task_name(title: str) -> str | None:
    """What a worker runs, from its process title: `ray::hog` -> `hog`, `ray::Holder.grow` ->
    `Holder.grow`, `ray::Holder` (an idle actor) -> `Holder`; None for an idle task worker or a
    process that is not a worker."""
    first = title.split(" ", 1)[0]
    if not first.startswith(TITLE_PREFIX):
        return None
    name = first[len(TITLE_PREFIX):]
    return None if not name or name.startswith(IDLE_TITLE) else name


def name_matches(name: str, globs: Iterable[str]) -> bool:
    """Case-sensitive globs against the name and, for `Class.method`, against `Class`."""
    candidates = {name, name.split(".", 1)[0]}
    return any(fnmatch.fnmatchcase(candidate, glob) for glob in globs for candidate in candidates)


def environment(ray_temp_dir: Path, match: Iterable[str], file_max_bytes: int,
                base: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to Ray's environment: the hook first on PYTHONPATH (the rest kept,
    after it), where the files go, which names start a recording, and each file's cap."""
    rest = base.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": str(HOOK_DIR) + (os.pathsep + rest if rest else ""),
        DIR_ENV: str(profile_dir(ray_temp_dir)),
        MATCH_ENV: ",".join(match),
        FILE_MAX_ENV: str(file_max_bytes),
    }
