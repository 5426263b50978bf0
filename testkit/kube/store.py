"""How the Kubernetes API server keeps objects, on top of kmock's in-memory storage.

kmock's ``KubernetesEmulator`` stores objects with their history, and does nothing on the
server side. :class:`ObjectStore` adds what the API server does to an object when it is
written, and nothing else: ``uid``, ``creationTimestamp``, ``resourceVersion`` and
``generation``; the status subresource (only ``.status`` changes through ``/status``, and never
through the main resource); ``generateName``; preconditions and conflicts; patch semantics per
content type (from :mod:`testkit.kube.semantics`); finalizers; garbage collection through
ownerReferences; a Secret's ``stringData`` stored base64-encoded in ``data``; and a
``clusterIP`` for each new Service (from 127.1.0.0/16, where nothing listens unless a test
starts it there), immutable on update (a change is 422, as on the API server); server-side
apply and managedFields for Services (:mod:`testkit.kube.apply`, where its simplifications are
listed). It also serves the built-in resources rayguard uses (RBAC objects and ServiceAccounts
among them) and the resources of the CRDs it is given. :class:`testkit.kube.emulator.ApiEmulator` builds on it with the HTTP side.
"""
from __future__ import annotations

import base64
import copy
import pathlib
import random
import uuid
from collections.abc import Mapping
from typing import Any

import attrs
import kmock
import yaml

from rayguard_node.contract.rfc3339 import now_seconds

from .apply import APPLY_PATCH, manager_of, record_update, server_side_apply
from .semantics import api_error, apply_patch

VERBS = frozenset({'create', 'delete', 'get', 'list', 'patch', 'update', 'watch'})
CRDS = 'apiextensions.k8s.io/v1/customresourcedefinitions'
RAYCLUSTERS = 'rayguard.dev/v1/rayclusters'
RAYCLUSTER_CRD_NAME = 'rayclusters.rayguard.dev'
CRDS_DIR = pathlib.Path(__file__).resolve().parents[2] / 'crds'
NAME_CHARS = 'bcdfghjklmnpqrstvwxz2456789'  # what the API server uses for generateName
MANAGED_FIELDS = frozenset({'v1/services'})  # resources that keep managedFields and take apply

# resource: (kind, namespaced, subresources)
BUILTINS: dict[str, tuple[str, bool, frozenset[str]]] = {
    'v1/namespaces': ('Namespace', False, frozenset({'status'})),
    'v1/pods': ('Pod', True, frozenset({'status'})),
    'v1/services': ('Service', True, frozenset({'status'})),
    'v1/secrets': ('Secret', True, frozenset()),
    'v1/events': ('Event', True, frozenset()),
    'events.k8s.io/v1/events': ('Event', True, frozenset()),
    CRDS: ('CustomResourceDefinition', False, frozenset({'status'})),
    # An autoscaling cluster's own ServiceAccount, Role, RoleBinding and ConfigMap (and RBAC at
    # large: what is created here counts for authorization, testkit/kube/escalation.py).
    'v1/serviceaccounts': ('ServiceAccount', True, frozenset()),
    'v1/configmaps': ('ConfigMap', True, frozenset()),
    'rbac.authorization.k8s.io/v1/roles': ('Role', True, frozenset()),
    'rbac.authorization.k8s.io/v1/rolebindings': ('RoleBinding', True, frozenset()),
    'rbac.authorization.k8s.io/v1/clusterroles': ('ClusterRole', False, frozenset()),
    'rbac.authorization.k8s.io/v1/clusterrolebindings': ('ClusterRoleBinding', False, frozenset()),
}




@attrs.define(kw_only=True)
class ObjectStore(kmock.KubernetesEmulator):
    """kmock's emulator plus the server-side object semantics listed in the module docstring.
    Its write methods expect to be called under ``self._lock``."""

    _revision: int = attrs.field(default=0, init=False)
    _services_made: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for resource, (kind, namespaced, subresources) in BUILTINS.items():
            self.resources[resource] = kmock.ResourceInfo(
                kind=kind, singular=kind.lower(), namespaced=namespaced, verbs=VERBS,
                subresources=subresources)
        self._seed('v1/namespaces', {'metadata': {'name': 'default'}})

    # --- CRDs and seeding (call before serving; once served, POST objects instead)

    def install_crd(self, crd: Mapping[str, Any]) -> None:
        """Store a CRD object and serve the resource it defines."""
        self._seed(CRDS, crd)
        self._register_crd(crd)

    def _seed(self, resource: str, body: Mapping[str, Any]) -> None:
        ref = kmock.resource(resource)
        obj = copy.deepcopy(dict(body))
        self._stamp(ref, obj)
        self._store((ref, obj['metadata'].get('namespace'), obj['metadata']['name']), obj)

    def _register_crd(self, crd: Mapping[str, Any]) -> None:
        spec, names = crd['spec'], crd['spec']['names']
        for version in spec.get('versions', []):
            if version.get('served', True):
                self.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = (
                    kmock.ResourceInfo(
                        kind=names['kind'], singular=names.get('singular') or names['kind'].lower(),
                        namespaced=spec.get('scope', 'Namespaced') == 'Namespaced', verbs=VERBS,
                        shortnames=names.get('shortNames', ()),
                        categories=names.get('categories', ()),
                        subresources=set(version.get('subresources') or {})))

    # --- writes (called under self._lock)

    async def _write(self, request: kmock.Request) -> kmock.Request:
        resource = request.resource
        assert resource is not None
        if resource not in self.resources:
            raise api_error(404, f'the server has no resource {resource.plural!r}')
        info = self.resources[resource]
        if request.action == kmock.action.CREATE:
            return await self._create(request, info)
        key = (resource, request.namespace if info.namespaced else None, request.name)
        current = self._live(key)
        if current is None and _is_apply(request) and request.subresource is None:
            return await self._apply_create(request, info)  # an apply creates what is missing
        if current is None or request.subresource not in {None, *info.subresources}:
            raise api_error(404, f'{resource.plural} "{request.name}" not found')
        if request.action == kmock.action.UPDATE:
            await self._update(key, current, request, info)
            return attrs.evolve(request, action=kmock.action.UPDATE)  # PUT renders as UPDATE
        options = request.data if isinstance(request.data, dict) else {}
        for field in ('uid', 'resourceVersion'):
            expected = (options.get('preconditions') or {}).get(field)
            if expected is not None and expected != current['metadata'].get(field):
                raise api_error(409, f'precondition failed: {field} is not {expected}')
        await self._delete(key)  # every propagationPolicy acts as Background
        return request

    async def _apply_create(self, request: kmock.Request, info: kmock.ResourceInfo) -> kmock.Request:
        resource = request.resource
        assert resource is not None
        if not _tracked(resource):
            raise api_error(415, f'server-side apply is emulated for {sorted(MANAGED_FIELDS)} only')
        if not isinstance(request.data, dict):
            raise api_error(400, 'the applied configuration must be an object')
        if (request.data.get('metadata') or {}).get('name') not in {None, request.name}:
            raise api_error(400, 'the name of the object does not match the name in the URL')
        body = copy.deepcopy(request.data)
        body.setdefault('metadata', {})['name'] = request.name
        request = attrs.evolve(request, data=body, action=kmock.action.CREATE)
        return await self._create(request, info)

    async def _create(self, request: kmock.Request, info: kmock.ResourceInfo) -> kmock.Request:
        resource = request.resource
        assert resource is not None
        if not isinstance(request.data, dict):
            raise api_error(400, 'the body must be a JSON object')
        obj = copy.deepcopy(request.data)
        meta = obj.setdefault('metadata', {})
        if meta.get('resourceVersion'):
            raise api_error(400, 'resourceVersion should not be set on objects to be created')
        namespace = None
        if info.namespaced:
            namespace = request.namespace or meta.get('namespace')
            if not namespace or meta.get('namespace') not in {None, namespace}:
                raise api_error(400, 'the namespace of the object does not match the request')
            meta['namespace'] = namespace
        name = meta.get('name') or self._generate_name(resource, namespace,
                                                        meta.get('generateName'))
        if not name:
            raise api_error(422, 'name or generateName is required')
        meta['name'] = name
        key = (resource, namespace, name)
        if self._live(key) is not None:
            raise api_error(409, f'{resource.plural} "{name}" already exists', 'AlreadyExists')
        for field in ('deletionTimestamp', 'deletionGracePeriodSeconds'):
            meta.pop(field, None)
        if 'status' in info.subresources:
            obj.pop('status', None)  # a status subresource ignores status on create
        if resource == 'v1/secrets':
            encode_string_data(obj)
        if resource == 'v1/pods':
            obj['status'] = {'phase': 'Pending'}
        if resource == 'v1/services':
            spec = obj.setdefault('spec', {})
            if spec.get('type') != 'ExternalName' and not spec.get('clusterIP'):
                spec['clusterIP'] = self._next_cluster_ip()
        if _tracked(resource):
            meta.pop('managedFields', None)
            version = f'{resource.group}/{resource.version}'.lstrip('/')
            if _is_apply(request):
                applied = server_side_apply(None, request.data, request.params.get('fieldManager', ''),
                                            _forced(request), version, now_seconds())
                meta['managedFields'] = applied['metadata']['managedFields']
            else:
                record_update(None, obj, manager_of(request.params, request.headers), version, now_seconds())
        self._stamp(resource, obj)
        self._store(key, obj)
        await self._buses[resource].put({'type': 'ADDED', 'object': copy.deepcopy(obj)})
        if resource == CRDS:
            self._register_crd(obj)
        return attrs.evolve(request, namespace=namespace, name=name)

    async def _update(self, key: tuple[Any, str | None, str], old: dict[str, Any],
                      request: kmock.Request, info: kmock.ResourceInfo) -> None:
        if request.method == 'PUT':
            if not isinstance(request.data, dict):
                raise api_error(400, 'the body must be a JSON object')
            new = copy.deepcopy(request.data)
        else:
            if _is_apply(request):
                if not _tracked(key[0]) or request.subresource is not None:
                    raise api_error(415, f'server-side apply is emulated for {sorted(MANAGED_FIELDS)} only')
                if (request.data or {}).get('metadata', {}).get('name') not in {None, key[2]}:
                    raise api_error(400, 'the name of the object does not match the name in the URL')
                new = server_side_apply(old, request.data, request.params.get('fieldManager', ''),
                                        _forced(request), old.get('apiVersion', ''), now_seconds())
            else:
                if request.params.get('force'):
                    raise api_error(400, 'force is only allowed for apply patches')
                headers = {k.lower(): v for k, v in request.headers.items()}
                new = apply_patch(old, request.data, headers.get('content-type', ''),
                                  strategic=key[0].group in {'', 'events.k8s.io'})
        if not isinstance(new.get('metadata', {}), dict):
            raise api_error(400, 'metadata must be an object')
        sent_version = new.get('metadata', {}).get('resourceVersion')
        if sent_version and sent_version != old['metadata'].get('resourceVersion'):
            raise api_error(409, 'the object has been modified; please apply your changes '
                                 'to the latest version and try again')
        managed = (new.get('metadata') or {}).get('managedFields') if _is_apply(request) else None
        new = self._server_fields(old, new, request.subresource, info)
        if key[0] == 'v1/services' and request.subresource is None:
            self._keep_cluster_ip(old, new)
        if _tracked(key[0]) and request.subresource is None:
            if managed is not None:
                new['metadata']['managedFields'] = managed
            else:
                record_update(old, new, manager_of(request.params, request.headers), old.get('apiVersion', ''),
                              now_seconds())
        if key[0] == 'v1/secrets':
            encode_string_data(new)
        if new == old:
            return  # a no-op write changes nothing: no new resourceVersion, no watch event
        new['metadata']['resourceVersion'] = self._next_revision()
        self._store(key, new)
        await self._buses[key[0]].put({'type': 'MODIFIED', 'object': copy.deepcopy(new)})
        if new['metadata'].get('deletionTimestamp') and not new['metadata'].get('finalizers'):
            await self._remove(key)

    def _server_fields(self, old: dict[str, Any], new: dict[str, Any], subresource: str | None,
                       info: kmock.ResourceInfo) -> dict[str, Any]:
        """What the server keeps for itself on an update, whatever the client sent."""
        new = copy.deepcopy(new)  # patches share untouched subtrees with `old`
        if subresource == 'status':  # only .status changes through /status
            result = copy.deepcopy(old)
            result.pop('status', None)
            if new.get('status') is not None:
                result['status'] = new['status']
            return result
        has_status = 'status' in info.subresources
        if has_status:  # ...and never through the main resource
            new.pop('status', None)
            if 'status' in old:
                new['status'] = copy.deepcopy(old['status'])
        meta = new.setdefault('metadata', {})
        for field in ('name', 'namespace', 'uid', 'creationTimestamp', 'generation',
                      'resourceVersion', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'managedFields'):
            meta.pop(field, None)
            if field in old['metadata']:
                meta[field] = old['metadata'][field]
        new['apiVersion'], new['kind'] = old.get('apiVersion'), old.get('kind')
        ignored = {'apiVersion', 'kind', 'metadata', *(['status'] if has_status else [])}
        if ({k: v for k, v in new.items() if k not in ignored} !=
                {k: v for k, v in old.items() if k not in ignored}):
            meta['generation'] = int(old['metadata'].get('generation', 0)) + 1
        return new

    @staticmethod
    def _keep_cluster_ip(old: dict[str, Any], new: dict[str, Any]) -> None:
        """spec.clusterIP is immutable: an update that leaves it out keeps it, one that changes
        it is refused with 422, as the API server does (a headless switch is delete and create)."""
        before = (old.get('spec') or {}).get('clusterIP')
        spec = new.setdefault('spec', {})
        if not spec.get('clusterIP') and before:
            spec['clusterIP'] = before
        elif before and spec.get('clusterIP') != before:
            raise api_error(422, f'Service "{old["metadata"]["name"]}" is invalid: spec.clusterIP: Invalid value: '
                                 f'"{spec["clusterIP"]}": field is immutable')

    async def _delete(self, key: tuple[Any, str | None, str]) -> None:
        """Delete now, or only mark for deletion while finalizers remain (generation bumps,
        as the API server does when it sets deletionTimestamp)."""
        obj = self._live(key)
        if obj is None:
            return
        meta = obj['metadata']
        if not meta.get('finalizers'):
            await self._remove(key)
        elif not meta.get('deletionTimestamp'):
            meta.update(deletionTimestamp=now_seconds(), deletionGracePeriodSeconds=0,
                        generation=int(meta.get('generation', 0)) + 1,
                        resourceVersion=self._next_revision())
            self._store(key, obj)
            await self._buses[key[0]].put({'type': 'MODIFIED', 'object': copy.deepcopy(obj)})

    async def _remove(self, key: tuple[Any, str | None, str]) -> None:
        """Gone for good, then garbage-collect dependents, synchronously and recursively. A
        dependent goes when none of its owners is left, as the garbage collector decides."""
        last = self._live(key)
        assert last is not None
        last['metadata']['resourceVersion'] = self._next_revision()
        self._objects[key].delete()
        await self._buses[key[0]].put({'type': 'DELETED', 'object': last})
        owner_uid = last['metadata'].get('uid')
        alive = {obj.raw['metadata'].get('uid') for obj in self._objects.values()
                 if not obj.deleted and isinstance(obj.raw.get('metadata'), dict)}
        for child_key, child in list(self._objects.items()):
            meta = {} if child.deleted else child.raw.get('metadata') or {}
            refs = meta.get('ownerReferences') or []
            uids = {ref.get('uid') for ref in refs}
            if owner_uid in uids and not (uids - {owner_uid}) & alive:
                await self._delete(child_key)

    # --- storage helpers

    def _live(self, key: tuple[Any, str | None, str]) -> dict[str, Any] | None:
        if key not in self._objects or self._objects[key].deleted:
            return None
        return copy.deepcopy(self._objects[key].raw)

    def _store(self, key: tuple[Any, str | None, str], obj: dict[str, Any]) -> None:
        if key in self._objects:
            self._objects[key].history.append(obj)
        else:
            self._objects[key] = obj

    def _stamp(self, resource: kmock.resource, obj: dict[str, Any]) -> None:
        info = self.resources[resource]
        obj['apiVersion'] = f'{resource.group}/{resource.version}'.lstrip('/')
        obj['kind'] = info.kind
        obj['metadata'].update(uid=str(uuid.uuid4()), creationTimestamp=now_seconds(),
                               resourceVersion=self._next_revision(), generation=1)

    def _next_cluster_ip(self) -> str:
        self._services_made += 1
        return f'127.1.{self._services_made // 254 % 256}.{self._services_made % 254 + 1}'

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _generate_name(self, resource: kmock.resource, namespace: str | None,
                       prefix: str | None) -> str | None:
        while prefix:
            name = prefix + ''.join(random.choices(NAME_CHARS, k=5))
            if self._live((resource, namespace, name)) is None:
                return name
        return None


def _tracked(resource: Any) -> bool:
    return any(resource == r for r in MANAGED_FIELDS)  # kmock.resource equals its string, but hashes apart


def _is_apply(request: kmock.Request) -> bool:
    headers = {k.lower(): v for k, v in request.headers.items()}
    return (request.method == 'PATCH'
            and headers.get('content-type', '').split(';')[0].strip().lower() == APPLY_PATCH)


def _forced(request: kmock.Request) -> bool:
    return request.params.get('force', '').lower() in {'true', '1'}


def encode_string_data(secret: dict[str, Any]) -> None:
    """What the API server does with a Secret's stringData: stored base64-encoded in data (it
    wins over data's key of the same name), and never returned."""
    string_data = secret.pop('stringData', None)
    if string_data:
        secret['data'] = {**(secret.get('data') or {}),
                          **{k: base64.b64encode(str(v).encode()).decode() for k, v in string_data.items()}}


def load_rayguard_crd(crds_dir: pathlib.Path = CRDS_DIR) -> dict[str, Any]:
    """The RayCluster CRD from crds/, the single source, as the chart and the cluster get it."""
    for path in sorted(crds_dir.glob('*.y*ml')):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get('kind') == 'CustomResourceDefinition' \
                    and doc.get('metadata', {}).get('name') == RAYCLUSTER_CRD_NAME:
                return doc
    raise FileNotFoundError(f'no CRD named {RAYCLUSTER_CRD_NAME} in {crds_dir}')
