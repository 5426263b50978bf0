"""Server-side apply and managedFields, as pure functions, for the emulator's Services.

What the API server does, and what this keeps of it (Kubernetes docs, "Server-Side Apply"):

- A field set is a set of paths, encoded as ``fieldsV1`` the way Kubernetes does: nested
  objects keyed ``f:<field>``; items of a keyed list ``k:{"key":value,...}`` (JSON, keys
  sorted), with ``.`` for the item itself; a leaf is ``{}``. Keyed lists here: ``ports`` by
  ``port`` and ``protocol`` (a missing protocol counts as TCP, the server's default),
  ``ownerReferences`` by ``uid``, ``containers``/``env``/``volumes``... by ``name``. Other lists,
  and the atomic maps in ``ATOMIC_MAPS`` (a Service's ``selector``), are owned as a whole.
  Identity and server fields (``apiVersion``, ``kind``, ``metadata.name``/``namespace``/``uid``/
  ``resourceVersion``/``generation``/``creationTimestamp``/``managedFields``, ``status``) are
  never in a set.
- An apply (PATCH ``application/apply-patch+yaml`` with ``fieldManager``) merges the applied
  configuration into the object (maps by key, keyed lists by key, the rest replaced); the
  manager's ``Apply`` entry becomes exactly the applied configuration's set; a field it owned
  before and no longer applies is removed from the object unless another manager owns it too
  (a list item goes when nobody owns anything in it any more). A field it applies with a value
  that differs from the object's, and that another manager owns, is a conflict: 409 unless
  ``force=true``, which moves the field to the applier. Equal values are shared, not a conflict.
  An apply to a missing object creates it.
- Any other write (create, PUT, merge, JSON or strategic patch) is an ``Update`` by the manager
  named by ``fieldManager`` or, as the server does, by the User-Agent up to its first ``/``: it
  takes the fields whose value it set or changed from every other manager (never a conflict),
  and a field it removed leaves every manager's set.

Simplified: only Services keep managedFields; ``/status`` writes record nothing; an entry's
``time`` is when its set last changed; there is no ``fieldValidation``, no dry run, no
``apiVersion`` conversion, and no defaulting beyond a port's protocol.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .semantics import api_error

APPLY_PATCH = 'application/apply-patch+yaml'
LIST_KEYS: dict[str, tuple[str, ...]] = {
    'ports': ('port', 'protocol'), 'ownerReferences': ('uid',), 'containers': ('name',),
    'initContainers': ('name',), 'env': ('name',), 'volumes': ('name',), 'volumeMounts': ('mountPath',),
    'imagePullSecrets': ('name',)}
ATOMIC_MAPS = frozenset({'selector'})
DEFAULTS = {('ports', 'protocol'): 'TCP'}
SERVER_METADATA = frozenset({'name', 'namespace', 'uid', 'resourceVersion', 'generation', 'creationTimestamp',
                             'managedFields', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'selfLink'})

Path = tuple[str, ...]


def _item_key(field: str, item: Mapping[str, Any]) -> str:
    key = {k: item.get(k, DEFAULTS.get((field, k))) for k in LIST_KEYS[field]}
    return 'k:' + json.dumps(key, sort_keys=True, separators=(',', ':'))


def _keyed(field: str, value: Any) -> bool:
    return field in LIST_KEYS and isinstance(value, list) and all(isinstance(i, Mapping) for i in value)


def _content(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an object that field sets cover."""
    result = {k: v for k, v in obj.items() if k not in {'apiVersion', 'kind', 'status'}}
    meta = {k: v for k, v in (obj.get('metadata') or {}).items() if k not in SERVER_METADATA}
    result.pop('metadata', None)
    if meta:
        result['metadata'] = meta
    return result


def field_paths(obj: Mapping[str, Any]) -> set[Path]:
    """The leaf paths an object (or an applied configuration) sets."""
    paths: set[Path] = set()

    def walk(node: Mapping[str, Any], prefix: Path) -> None:
        for key, value in node.items():
            path = prefix + (f'f:{key}',)
            if isinstance(value, Mapping) and value and key not in ATOMIC_MAPS:
                walk(value, path)
            elif _keyed(key, value) and value:
                for item in value:
                    item_path = path + (_item_key(key, item),)
                    paths.add(item_path + ('.',))
                    walk(item, item_path)
            else:
                paths.add(path)
    walk(_content(obj), ())
    return paths


def value_at(obj: Any, path: Path) -> tuple[bool, Any]:
    node = obj
    parent = ''
    for step in path:
        if step == '.':
            return True, None
        if step.startswith('f:') and isinstance(node, Mapping) and step[2:] in node:
            parent, node = step[2:], node[step[2:]]
        elif step.startswith('k:') and isinstance(node, list):
            found = [i for i in node if isinstance(i, Mapping) and _item_key(parent, i) == step]
            if not found:
                return False, None
            node = found[0]
        else:
            return False, None
    return True, node


def encode(paths: Iterable[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for step in path:
            node = node.setdefault(step, {})
    return root


def decode(fields: Mapping[str, Any], prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for step, child in fields.items():
        if isinstance(child, Mapping) and child:
            paths |= decode(child, prefix + (step,))
        else:
            paths.add(prefix + (step,))
    return paths


def _entries(obj: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return copy.deepcopy(((obj or {}).get('metadata') or {}).get('managedFields') or [])


def _with_sets(entries: list[dict[str, Any]], sets: list[set[Path]], now: str) -> list[dict[str, Any]]:
    result = []
    for entry, paths in zip(entries, sets):
        if not paths:
            continue  # a manager that owns nothing is dropped
        fields = encode(paths)
        if fields != entry.get('fieldsV1'):
            entry = {**entry, 'fieldsV1': fields, 'time': now}
        result.append(entry)
    return result


def _entry(manager: str, operation: str, api_version: str, now: str) -> dict[str, Any]:
    return {'manager': manager, 'operation': operation, 'apiVersion': api_version, 'time': now,
            'fieldsType': 'FieldsV1', 'fieldsV1': {}}


def merge_applied(live: Any, applied: Any, field: str = '') -> Any:
    if isinstance(applied, Mapping) and isinstance(live, Mapping) and field not in ATOMIC_MAPS:
        result = dict(live)
        for key, value in applied.items():
            result[key] = merge_applied(live.get(key), value, key)
        return result
    if _keyed(field, applied) and _keyed(field, live):
        items = {_item_key(field, i): i for i in live}
        merged = [merge_applied(items.get(_item_key(field, i)), i, '') for i in applied]
        applied_keys = {_item_key(field, i) for i in applied}
        return merged + [copy.deepcopy(i) for i in live if _item_key(field, i) not in applied_keys]
    return copy.deepcopy(applied)


def _remove(obj: dict[str, Any], path: Path, keep: set[Path]) -> None:
    """Remove the field at `path`; a list item (path ending in '.') only when no path in
    `keep` lies inside it. Maps and lists the removal leaves empty go too."""
    if path[-1] == '.':
        if any(p[:len(path) - 1] == path[:-1] for p in keep):
            return
        path = path[:-1]
    _remove_at(obj, path, '')


def _remove_at(node: Any, path: Path, field: str) -> None:
    step, rest = path[0], path[1:]
    if step.startswith('f:') and isinstance(node, dict) and step[2:] in node:
        if not rest:
            node.pop(step[2:])
            return
        child = node[step[2:]]
        _remove_at(child, rest, step[2:])
        if child in ({}, []):
            node.pop(step[2:])
    elif step.startswith('k:') and isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, Mapping) and _item_key(field, item) == step:
                if rest:
                    _remove_at(item, rest, '')
                else:
                    del node[index]
                return


def server_side_apply(live: dict[str, Any] | None, applied: Any, manager: str, force: bool,
                      api_version: str, now: str) -> dict[str, Any]:
    """The object after `manager` applied `applied` to `live` (None: it is created), with its
    managedFields; a conflict raises the API server's 409."""
    if not isinstance(applied, dict):
        raise api_error(400, 'the applied configuration must be an object')
    if not manager:
        raise api_error(422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                             'is required for apply patch')
    entries = _entries(live)
    sets = [decode(e.get('fieldsV1') or {}) for e in entries]
    mine = next((i for i, e in enumerate(entries)
                 if e.get('manager') == manager and e.get('operation') == 'Apply' and not e.get('subresource')), None)
    if mine is None:
        entries.append(_entry(manager, 'Apply', api_version, now))
        sets.append(set())
        mine = len(entries) - 1
    applied_paths = field_paths(applied)
    before = live or {}
    conflicts: list[tuple[int, Path]] = []
    for path in applied_paths:
        if path[-1] == '.' or value_at(applied, path) == value_at(before, path):
            continue
        conflicts += [(i, path) for i, owned in enumerate(sets) if i != mine and path in owned]
    if conflicts and not force:
        lines = sorted(f'conflict with "{entries[i]["manager"]}": .{".".join(s[2:] for s in p)}'
                       for i, p in conflicts)
        raise api_error(409, f'Apply failed with {len(lines)} conflict(s): {"; ".join(lines)}')
    for i, path in conflicts:
        sets[i].discard(path)
    others = set().union(*(owned for i, owned in enumerate(sets) if i != mine))
    result = merge_applied(copy.deepcopy(before), applied)
    removed = sets[mine] - applied_paths - others
    for path in sorted(removed, key=lambda p: (p[-1] != '.', -len(p))):  # whole list items first
        if not (len(path) > 1 and path[-2].startswith('k:') and path[-1][2:] in json.loads(path[-2][2:])):
            _remove(result, path, others | applied_paths)  # (an item's key fields go with the item)
    sets[mine] = applied_paths
    result.setdefault('metadata', {})['managedFields'] = _with_sets(entries, sets, now)
    return result


def record_update(old: Mapping[str, Any] | None, new: dict[str, Any], manager: str, api_version: str,
                  now: str) -> None:
    """`new`'s managedFields after a non-apply write by `manager` turned `old` into `new`."""
    entries = _entries(old)
    sets = [decode(e.get('fieldsV1') or {}) for e in entries]
    old_paths, new_paths = field_paths(old or {}), field_paths(new)
    changed = {p for p in new_paths if p not in old_paths or value_at(new, p) != value_at(old, p)}
    gone = old_paths - new_paths
    mine = next((i for i, e in enumerate(entries)
                 if e.get('manager') == manager and e.get('operation') == 'Update' and not e.get('subresource')), None)
    if mine is None and changed:
        entries.append(_entry(manager, 'Update', api_version, now))
        sets.append(set())
        mine = len(entries) - 1
    for i, owned in enumerate(sets):
        owned -= gone
        if i != mine:
            owned -= changed
    if mine is not None:
        sets[mine] |= changed
    managed = _with_sets(entries, sets, now)
    meta = new.setdefault('metadata', {})
    meta.pop('managedFields', None)
    if managed:
        meta['managedFields'] = managed


def manager_of(params: Mapping[str, str], headers: Mapping[str, str]) -> str:
    """The field manager of a request: ?fieldManager=, else the User-Agent up to its first '/'."""
    if params.get('fieldManager'):
        return params['fieldManager']
    agent = next((v for k, v in headers.items() if k.lower() == 'user-agent'), '') or 'unknown'
    return agent.split('/', 1)[0].split(' ', 1)[0] or 'unknown'
