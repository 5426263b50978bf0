"""`rayguard operator --standalone` as a child process, so that its RSS is its own, and the
RayClusters the benchmarks give it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bench.harness import REPO
from bench.harness.emulator import NS
from bench.harness.procfs import vm_hwm_bytes
from bench.harness.waiting import wait_until


# `python -c` this instead of `-m rayguard_operator.cli`: the same operator, set up before kopf
# imports the handlers (into this process): the syncer logs one line per pass (debug), and, as
# asked, pod creates are not bounded per pass (the operator before batching), or the cache is off
# (every pass reads the API, each pod event runs its own pass: the operator before the cache).
def bootstrap(unbounded_batches: bool, cached: bool) -> str:
    lines = ["import logging, sys",
             "logging.getLogger('rayguard_operator.reconcile.syncer').setLevel(logging.DEBUG)"]
    if unbounded_batches:
        lines.append("import rayguard_operator.reconcile.actions as actions; actions.MAX_POD_CREATES_PER_PASS = None")
    if not cached:
        lines.append("import rayguard_operator.reconcile.cache as cache; cache.ENABLED = False")
    lines.append("from rayguard_operator.cli import main; sys.exit(main(sys.argv[1:]))")
    return "\n".join(lines)


# The syncer's debug line for each pass: `RayCluster NS/NAME: MODE pass: ...` (MODE: cached,
# uncached: event-driven, from the cache or not; fresh: the resync timer's full read).
EVENT_PASS = (": cached pass", ": uncached pass")
FRESH_PASS = ": fresh pass"


def cluster_body(name: str, workers: int) -> dict[str, Any]:
    body = yaml.safe_load((REPO / "examples" / "raycluster-minimal.yaml").read_text())
    body["metadata"]["name"] = name
    body["spec"]["workerGroups"][0]["replicas"] = workers
    return body


class Operator:
    """`rayguard operator --standalone` as a child process, stopped by its PID."""

    def __init__(self, kubeconfig: Path, log_path: Path, resync_s: float, unbounded_batches: bool = False,
                 cached: bool = True) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAYGUARD_")}
        env.update(KUBECONFIG=str(kubeconfig), RAYGUARD_OPERATOR_NAMESPACES=NS,
                   RAYGUARD_OPERATOR_LOG_FORMAT="plain", RAYGUARD_OPERATOR_RESYNC_SECONDS=str(resync_s),
                   RAYGUARD_OPERATOR_NODE_IMAGE="rayguard/node:bench", RAYGUARD_OPERATOR_METRICS_PORT="0")
        self.log_path = log_path
        self._log = log_path.open("w")
        command = [sys.executable, "-c", bootstrap(unbounded_batches, cached), "operator", "--standalone"]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def peak_rss(self) -> int | None:
        return vm_hwm_bytes(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def log_size(self) -> int:
        """Where the log ends now: count passes between two of these with `passes`."""
        return self.log_path.stat().st_size

    def passes(self, markers: tuple[str, ...], start: int = 0, end: int | None = None) -> list[str]:
        """The pass lines holding one of `markers` between two `log_size()` offsets."""
        with self.log_path.open("rb") as log:
            log.seek(start)
            text = log.read(None if end is None else end - start).decode(errors="replace")
        return [line for line in text.splitlines() if any(m in line for m in markers)]

    def problems(self) -> list[str]:
        text = self.log_path.read_text(errors="replace")
        lines = text.splitlines()
        return [line for line in lines if "Traceback" in line or " ERROR" in line or "[ERROR" in line]


def wait_watching(emulator: Any, operator: "Operator", timeout_s: float = 60) -> None:
    """Until the operator watches RayClusters and pods (kopf's two watch streams)."""
    watching = wait_until(lambda: sum(
        1 for r in list(emulator) if r.method.value == "GET" and "watch" in r.url.query
        and (r.url.path.endswith("/rayclusters") or r.url.path.endswith("/pods"))) >= 2, timeout_s)
    if not watching:
        raise RuntimeError(f"the operator did not start watching; see {operator.log_path.name}")
