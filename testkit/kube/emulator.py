"""The Kubernetes API that integration tests (and the benchmarks) run rayguard against.

kmock's ``KubernetesEmulator`` keeps objects in memory and serves discovery, lists, gets and
watch streams over HTTP. It leaves out what a real API server does on the server side, and the
operator depends on exactly that: ``uid`` (the kubernetes client refuses ownerReferences
without one), ``resourceVersion``, ``generation`` (``observedGeneration`` compares with it),
the status subresource (kopf patches ``/status`` when discovery lists it), ``generateName``
(kopf names its Events that way), garbage collection through ownerReferences, label and field
selectors, and patch semantics per content type. :class:`ApiEmulator` adds those, and, when
it is given an :class:`testkit.kube.rbac.Authorizer`, RBAC: bearer tokens, and a 403 with the
API server's Status body for every request the chart's rules do not allow. It is not an API
server otherwise (no admission beyond the owner-reference check, no schema validation).
What happens to objects on a write is :class:`testkit.kube.store.ObjectStore`'s; this module
adds the HTTP side: the entry point, the write log, and lists and watches with selectors.

Everything else stays kmock's: discovery, object storage with history (``emulator.objects``),
watch streams, fetches, error rendering and the reaction DSL. Reactions answer writes after
they are applied, as in kmock. See ``testkit/README.md``.
"""
from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import aiohttp.web
import attrs
import kmock
from kmock._internal.rendering import StreamingError  # no public name for it in kmock 0.8

from .escalation import RBAC_RESOURCES, LiveRbac, escalation_refusal, live_rbac
from .rbac import Attributes, Authorizer, Decision, Policy, request_attributes
from .semantics import REASONS, api_error, apply_patch, field_value, parse_field_selector, parse_label_selector, \
    parse_path, parse_request, resource_of, selected
from .store import ObjectStore, load_rayguard_crd

WRITE_METHODS = frozenset({'POST', 'PUT', 'PATCH', 'DELETE'})


class Write(NamedTuple):
    """One write request as it arrived, whatever its outcome. `time` is time.monotonic()."""
    method: str
    path: str
    time: float

    @property
    def resource(self) -> str:
        return resource_of(self.path)


@attrs.define(kw_only=True)
class ApiEmulator(ObjectStore):
    """kmock's emulator plus the server-side behaviour listed in the module docstring."""

    writes: list[Write] = attrs.field(factory=list, init=False)
    # None: everyone may do everything. Set it before serving, or from the server's loop.
    authorizer: Authorizer | None = attrs.field(default=None)
    # Bearer tokens issued to ServiceAccounts created through the API (`issue_token`): token ->
    # (namespace, name). A token stops working when its ServiceAccount is deleted.
    service_account_tokens: dict[str, tuple[str, str]] = attrs.field(factory=dict, init=False)
    _live_rbac_cache: tuple[int, LiveRbac] | None = attrs.field(default=None, init=False)

    def refused(self) -> list[Decision]:
        """Requests the authorizer refused (401 and 403), in order."""
        return [] if self.authorizer is None else list(self.authorizer.refused)

    # --- write counting

    def mark(self) -> float:
        """A point in time for `count_writes(since=...)`."""
        return time.monotonic()

    def writes_between(self, since: float | None = None, until: float | None = None) -> list[Write]:
        return [w for w in list(self.writes)  # a snapshot: the server thread appends
                if (since is None or w.time >= since) and (until is None or w.time < until)]

    def count_writes(self, since: float | None = None, until: float | None = None, *,
                     resource: str | None = None, method: str | None = None) -> int:
        """Write requests in [since, until). `resource='rayclusters'` includes its
        subresources; `resource='rayclusters/status'` is only those."""
        return sum(1 for w in self.writes_between(since, until)
                   if resource is None or w.resource == resource
                   or w.resource.startswith(f'{resource}/')
                   if method is None or w.method == method.upper())

    def writes_by_resource(self, since: float | None = None,
                           until: float | None = None) -> Counter[str]:
        return Counter(w.resource for w in self.writes_between(since, until))

    # --- HTTP entry point and dispatch

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock's entry point (same error handling), but with our path parsing, and every
        write request recorded before anything else can fail."""
        if raw_request.method in WRITE_METHODS:
            self.writes.append(Write(raw_request.method, raw_request.path, time.monotonic()))
        raw_response: aiohttp.web.StreamResponse | None = None
        # Read the body first: parse_request awaits it, and a pause between taking the
        # next id and logging the request would let two concurrent requests share an id.
        body = await raw_request.read()
        if self.authorizer is not None:
            refusal = self._authorize(raw_request, body)
            if refusal is not None:
                return aiohttp.web.json_response(refusal.status, status=refusal.code)
        try:
            request = await parse_request(raw_request, id=len(self._requests))
            self._requests.append(request)
            try:
                return await self._handle(request)
            except StreamingError as e:  # the stream started: report the error inside it
                raw_response = e.args[0]
                raise e.__cause__ or e
        except Exception as e:
            if not self._errors:
                raise
            self._errors[-1].append(e)
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(e)
            await self._stream_error(e, raw_response)
            await raw_response.write_eof()
            return raw_response

    # --- RBAC made through the API (testkit/kube/escalation.py)

    def issue_token(self, namespace: str, name: str) -> str:
        """A bearer token for ServiceAccount `namespace/name`, which must exist: requests with it
        are `system:serviceaccount:<namespace>:<name>`'s. Call it from the server's loop."""
        if self._live((kmock.resource('v1/serviceaccounts'), namespace, name)) is None:
            raise LookupError(f'no ServiceAccount {namespace}/{name}: create it first')
        token = f'sa-{namespace}-{name}-{uuid.uuid4().hex[:12]}'
        self.service_account_tokens[token] = (namespace, name)
        self._live_rbac_cache = None  # the token counts from the next request on
        return token

    def live_rbac(self) -> LiveRbac:
        """The RBAC objects, tokens and ServiceAccounts there are now (recomputed after a write)."""
        if self._live_rbac_cache is None or self._live_rbac_cache[0] != self._revision:
            docs, accounts = [], []
            for (resource, namespace, name), obj in self._objects.items():
                if obj.deleted:
                    continue
                if any(resource == r for r in RBAC_RESOURCES):  # equals its string, hashes apart
                    docs.append(obj.raw)
                elif resource == 'v1/serviceaccounts':
                    accounts.append((namespace, name))
            self._live_rbac_cache = (self._revision, live_rbac(docs, self.service_account_tokens, accounts))
        return self._live_rbac_cache[1]

    def _rbac_object(self, method: str, path: str, params: dict[str, str], data: Any,
                     content_type: str) -> Any:
        """What a write to an RBAC object would store (a patch applied to the object there is)."""
        attributes: Attributes = request_attributes(method, path, params)
        if attributes.group != 'rbac.authorization.k8s.io' or method not in {'POST', 'PUT', 'PATCH'}:
            return None
        if method != 'PATCH':
            return data
        info = parse_path(path)
        key = (kmock.resource(f'{info.group}/{info.version}/{info.plural}'.lstrip('/')), info.namespace, info.name)
        current = self._live(key)
        if current is None or not isinstance(data, (dict, list)):
            return None
        try:
            return apply_patch(current, data, content_type, strategic=True)
        except kmock.KubernetesError:
            return None  # the write itself will say what is wrong

    def _authorize(self, raw_request: aiohttp.web.BaseRequest, body: bytes) -> Decision | None:
        assert self.authorizer is not None
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        live = self.live_rbac()
        obj = self._rbac_object(raw_request.method, raw_request.path, dict(raw_request.query), data,
                                raw_request.headers.get('Content-Type', ''))

        def escalation(user: str, attributes: Attributes, policies: tuple[Policy, ...]) -> dict[str, Any] | None:
            return escalation_refusal(user, attributes, obj, policies, live)

        return self.authorizer.review(raw_request.method, raw_request.path, dict(raw_request.query),
                                      raw_request.headers.get('Authorization'), data, self._plural_of,
                                      live_policy=live.policy, accounts=live.accounts,
                                      escalation=escalation if obj is not None else None)

    def _plural_of(self, api_version: str, kind: str) -> str | None:
        group, _, version = api_version.rpartition('/')
        for resource, info in self.resources.items():
            if (resource.group, resource.version, info.kind) == (group, version, kind):
                return resource.plural
        return None

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        write = request.method in WRITE_METHODS and request.action is not None
        if request.resource is None or not write:
            return await super()._handle(request)
        async with self._lock:
            written = await self._write(request)
        # kmock's views match requests by identity against its log: log the resolved request
        # (generated name, PUT as UPDATE) in place of the parsed one.
        if self._requests[request.id] is request:
            self._requests[request.id] = written
        # Render through reactions and fallbacks, skipping KubernetesEmulator._handle: its own
        # in-place write logic would apply the request a second time.
        return await super(kmock.KubernetesEmulator, self)._handle(written)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        # kmock's own errors carry prose reasons ('Object Not Found'); clients match on
        # the API's StatusReason names.
        if isinstance(exc, kmock.KubernetesError) and exc.status in REASONS:
            if exc.reason not in {*REASONS.values(), 'AlreadyExists'}:
                exc = attrs.evolve(exc, reason=REASONS[exc.status])
        return await super()._render_error(exc)

    # --- reads

    async def _serve_create(self, request: kmock.Request) -> kmock.Response:
        return kmock.Response(status=201, payload=await super()._serve_create(request))

    async def _serve_list(self, request: kmock.Request) -> dict[str, Any]:
        resource = request.resource
        if resource is None or resource not in self.resources:
            raise api_error(404, 'the server could not find the requested resource')
        labels = parse_label_selector(request.params.get('labelSelector', ''))
        fields = parse_field_selector(request.params.get('fieldSelector', ''))
        async with self._lock:
            items = [obj.raw for (res, namespace, _), obj in self._objects.items()
                     if res == resource and not obj.deleted
                     and request.namespace in {None, namespace}
                     and selected(obj.raw, labels, fields)]
            revision = str(self._revision)
        items.sort(key=lambda o: (field_value(o, 'metadata.namespace'),
                                  field_value(o, 'metadata.name')))
        return {'apiVersion': f'{resource.group}/{resource.version}'.lstrip('/'),
                'kind': f'{self.resources[resource].kind}List',
                'metadata': {'resourceVersion': revision}, 'items': items}

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        """The objects there are now, then every change after them, filtered by selectors and
        by `resourceVersion`, and ended after `timeoutSeconds`, as the API server does.

        Not kmock's own stream: it takes its snapshot under the lock but marks its place in the
        event bus only after sending the snapshot, so a write between the two was lost to the
        watcher (a RayCluster created while kopf's watch started was never seen). Here both are
        taken under the lock that every write holds."""
        resource = request.resource
        if resource is None or resource not in self.resources:
            raise api_error(404, 'the server could not find the requested resource')
        labels = parse_label_selector(request.params.get('labelSelector', ''))
        fields = parse_field_selector(request.params.get('fieldSelector', ''))
        since = request.params.get('resourceVersion', '')
        since_revision = int(since) if since.isdigit() else 0
        timeout = float(request.params.get('timeoutSeconds') or 0) or None
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout

        def wanted(obj: dict[str, Any]) -> bool:
            meta = obj.get('metadata') or {}
            if request.namespace not in {None, meta.get('namespace')}:
                return False
            if request.name not in {None, meta.get('name')}:
                return False
            revision = str(meta.get('resourceVersion', ''))
            fresh = not revision.isdigit() or int(revision) > since_revision
            return fresh and selected(obj, labels, fields)

        yield b''  # send the headers now: a watch with nothing to say is still a stream
        bus = self._buses[resource]
        async with self._lock:
            mark = await bus.mark()
            snapshot = [copy.deepcopy(obj.raw) for (res, _, _), obj in self._objects.items()
                        if res == resource and not obj.deleted]
        events = aiter(bus.stream(since=mark))
        try:
            for obj in snapshot:
                if wanted(obj):
                    yield {'type': 'ADDED', 'object': obj}
            while True:
                now = asyncio.get_running_loop().time()
                remaining = None if deadline is None else deadline - now
                try:
                    event = await asyncio.wait_for(anext(events), remaining)
                except (StopAsyncIteration, TimeoutError):
                    return
                if not isinstance(event, dict) or wanted(event.get('object') or {}):
                    yield event
        finally:
            await events.aclose()
            await bus.unmark(mark)


def rayguard_emulator() -> ApiEmulator:
    emulator = ApiEmulator()
    emulator.install_crd(load_rayguard_crd())
    return emulator
