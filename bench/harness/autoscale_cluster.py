"""One autoscaling local cluster of `bench.autoscale`, run in this process as `rayguard local up`
runs it (the same loading, rendering, templates and `LocalCluster`), with a driver process
(`autoscale_driver.py`), recording what happened and when.

- `RecordingCluster` is a `LocalCluster` that also records, with `time.monotonic()`: each Event
  it shows (ScaledUp/ScaledDown, and every kill report), and, once per loop tick (0.25 s),
  each worker pod's start, readiness, removal and peak working set.
- `advertise="limit"` emulates what KubeRay does: the autoscaler config advertises memory = the
  container limit (`autoscaling_config(model, "limit")`), and every pod runs through
  `LimitMemoryRuntime`, whose nodes start Ray with `--memory` = the limit
  (`autoscale_limit_node.py`). `advertise="heap"` is rayguard as it ships.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TextIO

import yaml

from bench.harness import REPO
from rayguard_node.contract import autoscaler as A
from rayguard_node.contract import settings as S
from rayguard_operator.local.autoscaling import config_from_items, group_templates
from rayguard_operator.local.cluster import LocalCluster
from rayguard_operator.local.pods import LocalNode
from rayguard_operator.local.runtime_process import ProcessHandle, ProcessRuntime
from rayguard_operator.manifests.autoscaler import ADVERTISE_HEAP, ADVERTISE_LIMIT, autoscaling_config
from rayguard_operator.manifests.render import load_cluster, model_of, render_list
from rayguard_operator.settings import OperatorSettings

GROUP = "cpu"
ADVERTISE_MODES = (ADVERTISE_HEAP, ADVERTISE_LIMIT)


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    idle_timeout_s: int
    max_replicas: int
    worker_cpus: int
    worker_memory: str  # a quantity, e.g. "2Gi"
    head_memory: str = "2Gi"

    def body(self) -> dict[str, Any]:
        return {"apiVersion": "rayguard.dev/v1", "kind": "RayCluster", "metadata": {"name": self.name},
                "spec": {"autoscaling": {"enabled": True, "idleTimeoutSeconds": self.idle_timeout_s,
                                         "upscalingMode": "Default"},
                         "head": {"resources": {"limits": {"cpu": "1", "memory": self.head_memory}}},
                         "workerGroups": [{"name": GROUP, "replicas": 0, "minReplicas": 0,
                                           "maxReplicas": self.max_replicas,
                                           "resources": {"limits": {"cpu": str(self.worker_cpus),
                                                                    "memory": self.worker_memory}}}]}}


@dataclass
class Timeline:
    normal: list[tuple[float, str, str]] = field(default_factory=list)  # (t, reason, message)
    kills: list[tuple[float, str, str, str]] = field(default_factory=list)  # (t, reason, pod, message)
    started: dict[str, float] = field(default_factory=dict)  # worker pod -> t
    ready: dict[str, float] = field(default_factory=dict)
    removed: dict[str, float] = field(default_factory=dict)
    ip: dict[str, str] = field(default_factory=dict)  # worker pod -> its Ray node's IP
    limit_bytes: dict[str, int] = field(default_factory=dict)
    peak_working_set_bytes: dict[str, int] = field(default_factory=dict)


class RecordingCluster(LocalCluster):
    def __init__(self, *args: Any, timeline: Timeline, **kwargs: Any) -> None:
        self.timeline = timeline
        super().__init__(*args, **kwargs)

    def print_event(self, reason: str, pod: str, message: str) -> None:
        self.timeline.kills.append((time.monotonic(), reason, pod, message))
        super().print_event(reason, pod, message)

    def print_normal_event(self, reason: str, message: str) -> None:
        self.timeline.normal.append((time.monotonic(), reason, message))
        super().print_normal_event(reason, message)

    def observe(self) -> None:
        now, line = time.monotonic(), self.timeline
        present = set()
        for pod in self.pods[1:]:
            name = pod.node.name
            present.add(name)
            line.started.setdefault(name, pod.started_at)
            line.ip.setdefault(name, json.loads(pod.node.env[S.RAY_START_PARAMS.env])["node-ip-address"])
            line.limit_bytes.setdefault(name, pod.node.limit_bytes)
            if pod.ready:
                line.ready.setdefault(name, now)
            cgroup = getattr(pod.process, "cgroup", None)
            if cgroup is not None and pod.process.poll() is None:
                try:
                    working_set = cgroup.usage().working_set_bytes
                except OSError:
                    continue
                line.peak_working_set_bytes[name] = max(working_set, line.peak_working_set_bytes.get(name, 0))
        for name in line.started:
            if name not in present:
                line.removed.setdefault(name, now)


class LimitMemoryRuntime(ProcessRuntime):
    """The process runtime (its cgroup, pod view and environment), running each pod's node
    through `bench.harness.autoscale_limit_node`: Ray's `--memory` = the container limit."""

    name = "process, Ray --memory = limit (bench)"

    def start(self, pod: Mapping[str, Any], node: LocalNode, logs: Path) -> ProcessHandle:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYGUARD_", "RAY_"))}
        env.update(node.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        argv = [sys.executable, "-m", "bench.harness.autoscale_limit_node"]
        cgroup = None
        if self.parent is not None:
            cgroup = self.parent.create(f"rayguard-local-{node.name}", node.limit_bytes)
            argv = cgroup.command(argv, pod_view=self.pod_view)
        how = f"{'pod view' if self.pod_view else 'own cgroup'}, Ray --memory = limit" if cgroup else "no cgroup"
        stdout_path, stderr_path = logs / "reports.jsonl", logs / "runtime.log"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=err, start_new_session=True, cwd=REPO)
        return ProcessHandle(process, cgroup, stdout_path, stderr_path, how)


@dataclass
class ClusterRun:
    spec: ClusterSpec
    advertise: str
    advertised: Mapping[str, Any]  # the worker group's node type resources in the autoscaler config
    timeline: Timeline
    records: list[dict[str, Any]]  # the driver's lines
    kernel_oom_kills: dict[str, int]
    driver_status: int | None
    wall_s: float
    pod_view: bool


def _replace_config(items: list[dict[str, Any]], cluster_name: str, config: Mapping[str, Any]) -> None:
    for item in items:
        if item.get("kind") == "ConfigMap" and item["metadata"]["name"] == A.autoscaler_name(cluster_name):
            item["data"][A.CONFIG_KEY] = json.dumps(config, sort_keys=True)
            return
    raise LookupError(f"no autoscaler ConfigMap for {cluster_name}")


@dataclass(frozen=True)
class Prepared:
    """A cluster loaded and rendered as `rayguard local up` does, its autoscaler config as told."""

    spec: ClusterSpec
    advertise: str
    body: dict[str, Any]
    items: list[dict[str, Any]]
    templates: Mapping[str, dict[str, Any]]
    config: Mapping[str, Any]

    @property
    def advertised(self) -> dict[str, int]:
        """The worker group's node type resources, as the autoscaler is told."""
        return dict(self.config["available_node_types"][GROUP]["resources"])


def prepare(spec: ClusterSpec, advertise: str, work_dir: Path) -> Prepared:
    if advertise not in ADVERTISE_MODES:
        raise ValueError(f"advertise must be one of {ADVERTISE_MODES}, not {advertise!r}")
    path = work_dir / f"{spec.name}.yaml"
    path.write_text(yaml.safe_dump(spec.body(), sort_keys=False))
    settings = OperatorSettings.from_env()
    body = load_cluster(path)
    items = render_list(body, settings, path)["items"]
    if advertise == ADVERTISE_LIMIT:
        _replace_config(items, spec.name, autoscaling_config(model_of(path, body, settings), ADVERTISE_LIMIT))
    config = config_from_items(items, spec.name)
    if config is None:
        raise LookupError(f"{spec.name}: the rendered cluster has no autoscaler config")
    templates = group_templates(body, lambda copy: render_list(copy, settings, path)["items"])
    return Prepared(spec, advertise, body, items, templates, config)


def run_cluster(prepared: Prepared, driver_args: list[str], work_dir: Path, log: TextIO,
                timeout_s: float, settle_s: float = 0.0) -> ClusterRun:
    """Bring the cluster up, run the driver to its end (or `timeout_s`), then, for up to
    `settle_s`, let the cluster stop the workers it is stopping; bring it down."""
    started = time.monotonic()
    spec = prepared.spec
    runtime = LimitMemoryRuntime() if prepared.advertise == ADVERTISE_LIMIT else ProcessRuntime()
    timeline = Timeline()
    cluster = RecordingCluster(prepared.body, prepared.items, work_dir / spec.name, out=log, runtime=runtime,
                               templates=prepared.templates, timeline=timeline)
    records_path = work_dir / f"{spec.name}.driver.jsonl"
    status = None
    try:
        cluster.up()
        process = subprocess.Popen([sys.executable, "-m", "bench.harness.autoscale_driver", driver_args[0],
                                    str(records_path), *driver_args[1:]],
                                   env=cluster.driver_env(), stdout=log, stderr=log, cwd=REPO)
        deadline = time.monotonic() + timeout_s

        def done() -> bool:
            cluster.observe()
            return process.poll() is not None or time.monotonic() > deadline

        try:
            cluster.wait(done)
        finally:
            if process.poll() is None:
                process.terminate()
            status = process.wait()
        settled = time.monotonic() + settle_s
        cluster.wait(lambda: cluster.observe() or not cluster.pods[1:] or time.monotonic() > settled)
        time.sleep(1.5)  # a last report may still be on its way
        cluster.poll()
        cluster.observe()
    finally:
        cluster.down()
    records = [json.loads(line) for line in records_path.read_text().splitlines()] if records_path.exists() else []
    return ClusterRun(spec, prepared.advertise, prepared.advertised, timeline, records, cluster.kernel_oom_kills(),
                      status, time.monotonic() - started, runtime.pod_view)
