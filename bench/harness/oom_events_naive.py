"""The naive consumer of `bench.oom_events`: a thread per cluster, one Event and one status
update per report, no aggregation; in its own process, as the operator is. `NaiveConsumer`
starts it as `python -m bench.oom_events --naive-consumer SPEC` from the repository root."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes.client

from bench.harness import REPO
from bench.harness.emulator import MERGE, NS
from bench.harness.oom_events_clusters import REDIS_PORT
from rayguard_node.contract.reports import STREAM_KEY, Report
from rayguard_node.reporting.redis_server import redis_client
from testkit.kube import api_client

NAIVE_AGENT = "naive-consumer"


def naive_consumer(spec_path: Path) -> int:
    from rayguard_operator.manifests import events
    from rayguard_operator.oom.messages import REASON_BY_KIND, report_message
    from rayguard_operator.oom.counts import OomCount, tally

    spec = json.loads(spec_path.read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def follow(cluster: dict[str, Any]) -> None:
        client = api_client(spec["url"])
        client.user_agent = NAIVE_AGENT
        core, custom = kubernetes.client.CoreV1Api(client), kubernetes.client.CustomObjectsApi(client)
        name = cluster["name"]
        involved = json.loads(custom.get_namespaced_custom_object(
            "rayguard.dev", "v1", NS, "rayclusters", name, _preload_content=False).data)
        redis = redis_client(cluster["host"], REDIS_PORT, cluster["password"])
        last = cluster["last_id"]
        while not stop.is_set():
            try:
                raw = redis.xread({STREAM_KEY: last}, count=500, block=1000)
            except Exception:  # noqa: BLE001
                time.sleep(0.2)
                continue
            for _stream, entries in raw or []:
                for entry_id, fields in entries:
                    report = Report.from_dict(json.loads(fields[b"report"]))
                    message = report_message(report)
                    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                    note = events.EventNote(events.WARNING, REASON_BY_KIND[report.kind], message)
                    core.create_namespaced_event(NS, events.build_event(involved, note, f"{name}.{report.id}", now))
                    current = json.loads(custom.get_namespaced_custom_object(
                        "rayguard.dev", "v1", NS, "rayclusters", name, _preload_content=False).data)
                    oom = tally((current.get("status") or {}).get("oom"),
                                [OomCount(report.kind, report.time, message, entry_id.decode())])
                    custom.patch_namespaced_custom_object_status(
                        "rayguard.dev", "v1", NS, "rayclusters", name, {"status": {"oom": oom}},
                        _content_type=MERGE)
                    last = entry_id.decode()
        client.close()

    threads = [threading.Thread(target=follow, args=(c,), daemon=True) for c in spec["clusters"]]
    for thread in threads:
        thread.start()
    print("naive consumer: following", len(threads), "streams", flush=True)
    stop.wait()
    return 0


class NaiveConsumer:
    def __init__(self, url: str, clusters: list[dict[str, Any]], workdir: Path) -> None:
        spec = workdir / "naive.json"
        spec.write_text(json.dumps({"url": url, "clusters": clusters}))
        self._log = (workdir / "naive.log").open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "bench.oom_events", "--naive-consumer", str(spec)],
                                        stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        self.log_path = workdir / "naive.log"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
