"""What the Kubernetes API server does to a request, as pure functions: how it reads an API
path, how it applies each patch content type, and how it matches label and field selectors.

:mod:`testkit.kube.store` and :mod:`testkit.kube.emulator` build on these; they hold no state
and know nothing of kmock's storage, so each can be read (and trusted) on its own.
"""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import aiohttp.web
import jsonpatch
import jsonpointer
import kmock
import yaml

# Strategic merge patch without the Go schemas: the list fields rayguard's objects use, with
# their patchMergeKey. Other lists are replaced, as merge-patch does. `ports` is keyed by
# `containerPort` in containers and by `port` in Services.
MERGE_KEYS = {'containers': 'name', 'initContainers': 'name', 'env': 'name', 'volumes': 'name',
              'volumeMounts': 'mountPath', 'imagePullSecrets': 'name', 'conditions': 'type',
              'ownerReferences': 'uid', 'ports': 'port'}
MERGED_PRIMITIVE_LISTS = {'finalizers'}
REASONS = {400: 'BadRequest', 404: 'NotFound', 409: 'Conflict', 415: 'UnsupportedMediaType',
           422: 'Invalid', 500: 'InternalError'}


def api_error(status: int, message: str, reason: str | None = None) -> kmock.KubernetesError:
    """An error that kmock renders as a `Status` object, with the API's StatusReason names."""
    return kmock.KubernetesError(status=status, reason=reason or REASONS[status], message=message,
                                 details={'causes': []})


# --- paths and requests

class PathInfo(NamedTuple):
    group: str | None = None  # None: not a Kubernetes API path
    version: str | None = None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_path(path: str) -> PathInfo:
    """Split an API path. kmock 0.8 reads every `namespaces/X` as a namespace prefix, so it
    cannot address the `namespaces` resource itself (`/api/v1/namespaces` even raises)."""
    parts = [part for part in path.split('/') if part]
    if len(parts) >= 2 and parts[0] == 'api':
        group, version, rest = '', parts[1], parts[2:]
    elif len(parts) >= 2 and parts[0] == 'apis':
        group, version, rest = parts[1], (parts[2] if len(parts) > 2 else None), parts[3:]
    else:
        return PathInfo()
    namespace = None
    namespace_subresource = len(rest) == 3 and rest[2] in {'status', 'finalize'}
    if len(rest) >= 3 and rest[0] == 'namespaces' and not namespace_subresource:
        namespace, rest = rest[1], rest[2:]
    return PathInfo(group, version, rest[0] if rest else None, namespace,
                     rest[1] if len(rest) > 1 else None, '/'.join(rest[2:]) or None)



def resource_of(path: str) -> str:
    """`pods`, `rayclusters`, `rayclusters/status`, ...; the path itself if not an API path."""
    info = parse_path(path)
    if info.plural is None:
        return path
    return f'{info.plural}/{info.subresource}' if info.subresource else info.plural

def guess_action(method: str, name: str | None, params: Mapping[str, str]) -> kmock.action | None:
    if method == 'GET':
        return (kmock.action.WATCH if params.get('watch') in {'true', '1'} else
                kmock.action.FETCH if name else kmock.action.LIST)
    if method == 'POST' and not name:
        return kmock.action.CREATE
    if method in {'PATCH', 'PUT'} and name:
        return kmock.action.UPDATE
    if method == 'DELETE' and name:
        return kmock.action.DELETE
    return None  # e.g. deletecollection: not served, answered 404


async def parse_request(raw: aiohttp.web.BaseRequest, *, id: int) -> kmock.Request:
    body = await raw.read()
    text = body.decode('utf-8', errors='replace')
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
        if raw.headers.get('Content-Type', '').startswith('application/apply-patch+yaml'):
            try:  # an applied configuration may be YAML (JSON is YAML too)
                data = yaml.safe_load(text)
            except yaml.YAMLError:
                data = None
    info = parse_path(raw.path)
    params = dict(raw.query)
    resource = (None if info.group is None else
                kmock.resource(group=info.group, version=info.version, plural=info.plural))
    return kmock.Request(
        id=id, raw_request=raw, url=raw.url, method=raw.method, params=params,
        headers=dict(raw.headers), cookies=dict(raw.cookies), body=body, text=text, data=data,
        action=None if resource is None else guess_action(raw.method, info.name, params),
        resource=resource, namespace=info.namespace, name=info.name,
        subresource=info.subresource)


# --- patches

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 (`application/merge-patch+json`): dicts merge, None deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """`application/strategic-merge-patch+json` for the fields in MERGE_KEYS, with the
    `$patch: delete` and `$deleteFromPrimitiveList/` directives; the rest as merge-patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith('$deleteFromPrimitiveList/'):
            field = key.split('/', 1)[1]
            result[field] = [item for item in result.get(field, []) if item not in value]
        elif key.startswith('$'):  # $setElementOrder/..., $retainKeys: ordering hints only
            continue
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_list(field: str, current: list[Any], patch: list[Any]) -> list[Any]:
    if field in MERGED_PRIMITIVE_LISTS:
        return current + [item for item in patch if item not in current]
    key = MERGE_KEYS.get(field)
    if key == 'port' and any(isinstance(item, dict) and 'containerPort' in item
                             for item in current + patch):
        key = 'containerPort'
    if key is None:
        return copy.deepcopy(patch)
    result = copy.deepcopy(current)
    for item in patch:
        found = [i for i, old in enumerate(result)
                 if isinstance(old, dict) and isinstance(item, dict)
                 and old.get(key) == item.get(key)]
        if isinstance(item, dict) and item.get('$patch') == 'delete':
            result = [old for i, old in enumerate(result) if i not in found]
        elif found:
            result[found[0]] = strategic_merge_patch(result[found[0]], item)
        else:
            result.append(strategic_merge_patch({}, item))
    return result


def apply_patch(obj: dict[str, Any], patch: Any, content_type: str, *,
                strategic: bool) -> dict[str, Any]:
    """Patch as the API server does per Content-Type. Custom resources refuse strategic merge
    (415), and a failed JSON-patch `test` is 422: kopf relies on both."""
    media_type = content_type.split(';')[0].strip().lower()
    if media_type == 'application/json-patch+json':
        if not isinstance(patch, list):
            raise api_error(400, 'a JSON patch must be a list of operations')
        try:
            return jsonpatch.apply_patch(obj, patch)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException,
                KeyError, TypeError) as e:
            raise api_error(422, f'the JSON patch could not be applied: {e}')
    if not isinstance(patch, dict):
        raise api_error(400, 'the patch must be a JSON object')
    if media_type == 'application/merge-patch+json':
        return merge_patch(obj, patch)
    if media_type == 'application/strategic-merge-patch+json' and strategic:
        return strategic_merge_patch(obj, patch)
    raise api_error(415, f'the body of the request was in an unknown format: {media_type!r}')


# --- selectors

Predicate = Callable[[Mapping[str, Any]], bool]
_LABEL_REQUIREMENT = re.compile(
    r'\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*'
    r'(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9_.-]*)'
    r'|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*')


def parse_label_selector(text: str) -> list[Predicate]:
    """`a=b,c!=d,e,!f,g in (x,y),h notin (z)` into predicates over a labels dict."""
    predicates: list[Predicate] = []
    for part in re.split(r',(?![^()]*\))', text or ''):
        if not part.strip():
            continue
        m = _LABEL_REQUIREMENT.fullmatch(part)
        if m is None or (m['neg'] and (m['op'] or m['setop'])):
            raise api_error(400, f'unable to parse requirement: {part!r}')
        key = m['key']
        if m['op'] in {'=', '=='}:
            predicates.append(lambda labels, k=key, v=m['value']: labels.get(k) == v)
        elif m['op'] == '!=':
            predicates.append(lambda labels, k=key, v=m['value']: labels.get(k) != v)
        elif m['setop']:
            values = {v.strip() for v in m['values'].split(',')}
            inside = m['setop'] == 'in'
            predicates.append(lambda labels, k=key, vs=values, i=inside:
                              (k in labels and labels[k] in vs) == i)
        else:
            predicates.append(lambda labels, k=key, present=not m['neg']: (k in labels) == present)
    return predicates


def parse_field_selector(text: str) -> list[Predicate]:
    """`metadata.name=x,involvedObject.uid!=y` into predicates over a whole object. The API
    server allows only some fields per resource; this allows any dotted path."""
    predicates: list[Predicate] = []
    for part in filter(str.strip, (text or '').split(',')):
        m = re.fullmatch(r'\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*', part)
        if m is None:
            raise api_error(400, f'invalid field selector: {part!r}')
        path, op, value = m.groups()
        predicates.append(lambda obj, p=path, v=value, eq=op != '!=':
                          (field_value(obj, p) == v) == eq)
    return predicates


def field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for step in path.split('.'):
        value = value.get(step) if isinstance(value, Mapping) else None
    return '' if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def selected(obj: Mapping[str, Any], labels: list[Predicate], fields: list[Predicate]) -> bool:
    obj_labels = (obj.get('metadata') or {}).get('labels') or {}
    return all(p(obj_labels) for p in labels) and all(p(obj) for p in fields)
