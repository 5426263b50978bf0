"""Polling until a condition holds, and teardown that runs every step."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_quiet_log(path: Path, marker: str, quiet_s: float, timeout: float) -> bool:
    """Until no new line holding `marker` has appeared in the log at `path` for `quiet_s`."""
    state = {"count": -1, "since": time.monotonic()}

    def quiet() -> bool:
        count = path.read_text(errors="replace").count(marker)
        if count != state["count"]:
            state["count"], state["since"] = count, time.monotonic()
        return time.monotonic() - state["since"] >= quiet_s
    return wait_until(quiet, timeout, 0.5)


def teardown(steps: list[Callable[[], object] | None]) -> None:
    """Run every step, even after one fails; then re-raise the first failure."""
    failure: BaseException | None = None
    for step in steps:
        if step is None:
            continue
        try:
            step()
        except BaseException as error:  # noqa: BLE001 (the remaining steps must still run)
            print(f"cleanup step failed: {type(error).__name__}: {error}", file=sys.stderr)
            failure = failure or error
    if failure is not None:
        raise failure
