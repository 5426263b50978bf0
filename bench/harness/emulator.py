"""The tests' Kubernetes API emulator (testkit.kube) as the benchmarks run it.

`RecordingEmulator` has the same behaviour but three shortcuts, so that at 200 clusters it is
the operator that gets measured: kmock's request log keeps only the requests in flight (it
walks the whole log to route each request), and objects are found by key, and listed per
resource and per cluster label, instead of by scanning every object. It also logs every write
with its User-Agent, and every GET of one RayCluster by name (one per reconcile pass).
"""

from __future__ import annotations

import re
import time
from typing import Any, NamedTuple, TypeVar

import aiohttp.web
import attrs
import kmock
import kubernetes.client

from testkit.kube import api_client, load_rayguard_crd
from testkit.kube.emulator import WRITE_METHODS, ApiEmulator
from testkit.kube.semantics import api_error, field_value, parse_field_selector, parse_label_selector, \
    resource_of, selected

BENCH_AGENT = "rayguard-bench"
KOPF_AGENT = "kopf/"
OPERATOR_AGENT = "rayguard-operator"
NS = "default"
MERGE = "application/merge-patch+json"
CLUSTER_LABEL = "rayguard.dev/cluster"

E = TypeVar("E", bound="RecordingEmulator")


class Request(NamedTuple):
    time: float
    method: str
    path: str
    agent: str

    @property
    def resource(self) -> str:
        return resource_of(self.path)

    @property
    def origin(self) -> str:
        if self.agent.startswith(BENCH_AGENT):
            return "bench"
        return "kopf" if self.agent.startswith(KOPF_AGENT) else "operator"

    @property
    def part(self) -> str:
        """The part of the operator that made it: reconcile (an event's pass), resync (the
        timer's full read), oom (the OOM report follower), or other (an operator without the tag)."""
        for token in self.agent.split():  # e.g. "OpenAPI-Generator/37.0.2/python rayguard-operator/resync"
            if token.startswith(OPERATOR_AGENT + "/"):
                return token[len(OPERATOR_AGENT) + 1:]
        return "other"


class InFlightRequests(list):  # type: ignore[type-arg]
    """kmock's request log, holding only the requests still being served.

    kmock picks the reaction that serves a request by testing `request in view`, and that
    walks the whole request log, applying each view's criteria: every request costs time in
    proportion to all requests so far. At a few thousand requests the emulator, not the
    operator, is what gets measured. Ids stay absolute (a request's id is `len(log)` when it
    arrives), so the emulator's own `log[request.id]` still works.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.live: dict[int, Any] = {}

    def append(self, item: Any) -> None:
        self.live[self.total] = item
        self.total += 1

    def finish(self, raw_request: Any) -> None:
        for key, item in list(self.live.items()):
            if getattr(item, "_raw_request", None) is raw_request:
                del self.live[key]

    def __len__(self) -> int:
        return self.total

    def __bool__(self) -> bool:
        return bool(self.live)

    def __iter__(self) -> Any:
        return iter(list(self.live.values()))

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int) and index >= 0:
            return self.live.get(index)
        return list(self.live.values())[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        if index in self.live:
            self.live[index] = value


@attrs.define(kw_only=True)
class RecordingEmulator(ApiEmulator):
    """The tests' emulator with a request log of in-flight requests only (see
    InFlightRequests), also logging every write and every read that is not a watch, with who
    made it (User-Agent)."""

    log: list[Request] = attrs.field(factory=list, init=False)
    _keys_by_resource: dict[Any, dict[Any, None]] = attrs.field(factory=dict, init=False)
    _keys_by_cluster: dict[Any, dict[Any, None]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._requests = InFlightRequests()

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        method, path = raw_request.method, raw_request.path
        if method in WRITE_METHODS or (method == "GET" and raw_request.query.get("watch") not in ("true", "1")):
            self.log.append(Request(time.monotonic(), method, path, raw_request.headers.get("User-Agent", "")))
        try:
            return await super().__call__(raw_request)
        finally:
            self._requests.finish(raw_request)

    # kmock finds the object of a get, create, update or delete by scanning every object, and
    # the time of each request grows with the number of objects; these look it up by its key.
    def _find(self, request: Any, namespace: str | None, name: str | None) -> Any:
        key = (request.resource, namespace, name)
        return self._objects[key] if key in self._objects else None

    async def _serve_fetch(self, request: Any) -> Any:
        async with self._lock:
            obj = self._find(request, request.namespace, request.name)
        if obj is None or obj.deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return obj.raw

    async def _serve_create(self, request: Any) -> Any:
        meta = (request.data or {}).get("metadata", {}) if isinstance(request.data, dict) else {}
        async with self._lock:
            obj = self._find(request, request.namespace or meta.get("namespace"), request.name or meta.get("name"))
        assert obj is not None  # created by the emulator's _handle
        return kmock.Response(status=201, payload=obj.raw)

    async def _serve_update(self, request: Any) -> Any:
        async with self._lock:
            obj = self._find(request, request.namespace, request.name)
        assert obj is not None
        return obj.last.raw

    async def _serve_delete(self, request: Any) -> Any:
        async with self._lock:
            obj = self._find(request, request.namespace, request.name)
        assert obj is not None
        return obj.last.raw

    # ...and a list scans every object of every resource; this one scans one resource's, or
    # for the operator's `rayguard.dev/cluster=NAME` selector, the objects that ever had
    # that label (the selector is still applied to each).
    def _store(self, key: Any, obj: dict[str, Any]) -> None:
        super()._store(key, obj)
        self._keys_by_resource.setdefault(key[0], {})[key] = None
        cluster = ((obj.get("metadata") or {}).get("labels") or {}).get(CLUSTER_LABEL)
        if cluster:
            self._keys_by_cluster.setdefault((key[0], cluster), {})[key] = None

    async def _serve_list(self, request: Any) -> dict[str, Any]:
        resource = request.resource
        if resource is None or resource not in self.resources:
            raise api_error(404, "the server could not find the requested resource")
        labels = parse_label_selector(request.params.get("labelSelector", ""))
        fields = parse_field_selector(request.params.get("fieldSelector", ""))
        one_cluster = re.fullmatch(rf"{re.escape(CLUSTER_LABEL)}=([^,=!]+)", request.params.get("labelSelector", ""))
        async with self._lock:
            keys = (self._keys_by_cluster.get((resource, one_cluster.group(1)), {}) if one_cluster
                    else self._keys_by_resource.get(resource, {}))
            items = []
            for key in list(keys):
                obj = self._objects[key]
                if request.namespace in {None, key[1]} and not obj.deleted:
                    raw = obj.raw
                    if selected(raw, labels, fields):
                        items.append(raw)
            revision = str(self._revision)
        items.sort(key=lambda o: (field_value(o, "metadata.namespace"), field_value(o, "metadata.name")))
        return {"apiVersion": f"{resource.group}/{resource.version}".lstrip("/"),
                "kind": f"{self.resources[resource].kind}List",
                "metadata": {"resourceVersion": revision}, "items": items}

    def since(self, start: float, until: float | None = None) -> list[Request]:
        return [r for r in list(self.log) if r.time >= start and (until is None or r.time < until)]

    def cluster_reads(self, start: float, until: float | None = None) -> list[Request]:
        """The operator's GETs of one RayCluster by name: one per resync pass (the timer's full
        read; event-driven passes read the cache, or, with the cache off, the API too)."""
        return [r for r in self.since(start, until) if r.method == "GET" and r.origin == "operator"
                and r.resource == "rayclusters" and r.path.count("/") == 7]


def new_emulator(kind: type[E] = RecordingEmulator) -> E:  # type: ignore[assignment]
    """An emulator serving the RayCluster CRD, to serve with `testkit.kube.EmulatorServer`."""
    emulator = kind()
    emulator.install_crd(load_rayguard_crd())
    return emulator


def bench_client(url: str) -> kubernetes.client.ApiClient:
    """A client whose writes the emulator tells apart as the bench's own (User-Agent)."""
    client = api_client(url)
    client.user_agent = BENCH_AGENT
    return client
