"""Which worker process is which actor, and what `memory=` it reserved, from Ray's state API.

The head's dashboard serves Ray's state API (`/api/v0/actors`, what `list_actors(detail=True)`
reads). A thread polls it every few seconds for the live actors of this node (filtered by the
raylet's node id) and keeps the last answer, so the guard's loop never waits on HTTP. With
token auth on, requests carry the cluster's token as a bearer token. A failed poll keeps the
previous answer and is logged once until polls work again; a node without the dashboard simply
has no quotas to enforce.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping

from rayguard_node.guard.quota import ActorQuota

log = logging.getLogger(__name__)

POLL_PERIOD_S = 2.0
REQUEST_TIMEOUT_S = 3.0
MAX_ACTORS = 10_000
MAX_RESPONSE_BYTES = 32 << 20


def actors_url(base_url: str, node_id: str) -> str:
    query = [("detail", "1"), ("limit", str(MAX_ACTORS)),
             ("filter_keys", "state"), ("filter_predicates", "="), ("filter_values", "ALIVE"),
             ("filter_keys", "node_id"), ("filter_predicates", "="), ("filter_values", node_id)]
    return f"{base_url.rstrip('/')}/api/v0/actors?{urllib.parse.urlencode(query)}"


def parse_actors(payload: Any, node_id: str) -> dict[int, ActorQuota]:
    """pid -> quota for this node's live actors that reserved memory; odd entries are skipped."""
    try:
        rows = payload["data"]["result"]["result"]
    except (KeyError, TypeError):
        raise ValueError("not a state API answer (data.result.result missing)") from None
    actors: dict[int, ActorQuota] = {}
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict) or row.get("state") != "ALIVE" or row.get("node_id") != node_id:
            continue
        pid, resources = row.get("pid"), row.get("required_resources") or {}
        memory = resources.get("memory") if isinstance(resources, dict) else None
        if not isinstance(pid, int) or pid <= 0 or not isinstance(memory, (int, float)) or memory <= 0:
            continue
        actors[pid] = ActorQuota(pid, str(row.get("actor_id") or ""), str(row.get("class_name") or "?"),
                                 str(row.get("name") or ""), int(memory))
    return actors


def node_id_of_raylet(cmdline: str) -> str | None:
    """The raylet is started with `--node_id=<hex>`."""
    for word in cmdline.split():
        if word.startswith("--node_id="):
            return word.split("=", 1)[1] or None
    return None


class ActorDirectory:
    """The latest pid -> ActorQuota map for this node, refreshed by a background thread."""

    def __init__(self, base_url: str, node_id: Callable[[], str | None],
                 token_file: Path | None, period_s: float = POLL_PERIOD_S) -> None:
        self.base_url = base_url
        self.node_id = node_id
        self.token_file = token_file
        self.period_s = period_s
        self._actors: Mapping[int, ActorQuota] = {}
        self._failing = False
        self.polls = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def actors(self) -> Mapping[int, ActorQuota]:
        return self._actors

    def _headers(self) -> dict[str, str]:
        if self.token_file is None:
            return {}
        try:
            token = self.token_file.read_text().strip()
        except OSError:
            return {}
        return {"Authorization": f"Bearer {token}"} if token else {}

    def poll_once(self) -> None:
        node_id = self.node_id()
        if node_id is None:
            return  # the raylet is not up yet
        request = urllib.request.Request(actors_url(self.base_url, node_id), headers=self._headers())
        self.polls += 1
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as reply:
                payload = json.loads(reply.read(MAX_RESPONSE_BYTES))
            self._actors = parse_actors(payload, node_id)
        except (OSError, ValueError) as error:
            self.failures += 1
            if not self._failing:
                log.warning("quota enforcement: Ray's state API at %s did not answer (%s);"
                            " keeping the last list of actors and retrying", self.base_url, error)
            self._failing = True
            return
        if self._failing:
            log.info("quota enforcement: Ray's state API answers again")
        self._failing = False

    def _run(self) -> None:
        wait_s = 0.0
        while not self._stop.wait(wait_s):
            wait_s = self.period_s
            try:
                self.poll_once()
            except Exception:  # contained: the guard must never lose its actor list thread
                log.exception("quota enforcement: actor poll failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rayguard-actors", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(REQUEST_TIMEOUT_S + 1)
