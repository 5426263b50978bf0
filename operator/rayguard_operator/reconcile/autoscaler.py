"""The autoscaler's children of one cluster: what to create, patch or delete. Pure.

With `spec.autoscaling.enabled` a cluster has a ServiceAccount, a Role, a RoleBinding and a
ConfigMap, all named `autoscaler_name(cluster)` (manifests/autoscaler.py builds them). They are
made in that order, before any pod: the head pod runs as the ServiceAccount, and the API server
refuses a pod whose ServiceAccount does not exist yet. Then, on every pass:
- the ConfigMap is patched when the config (or a label rayguard sets) differs, and only then,
  so a pass over an unchanged cluster writes nothing;
- a Role or RoleBinding whose rules, roleRef or subjects differ from rayguard's (an operator
  upgrade, or someone widening them) is deleted and created again: roleRef is immutable, and
  the operator holds no right to patch either;
- the ServiceAccount only has to exist.
With autoscaling off they are deleted, the binding first and the ConfigMap last: the ConfigMap
is created last and deleted last, so it is the one the syncer looks for when it does not know
whether any of them is left (`reconcile/observe.py`).
"""

from __future__ import annotations

from typing import Any, Mapping

from rayguard_node.contract.autoscaler import autoscaler_name

from rayguard_operator.manifests.autoscaler import build_autoscaler_children
from rayguard_operator.reconcile.action import Action
from rayguard_operator.spec.model import ClusterModel

SERVICE_ACCOUNT, ROLE, ROLE_BINDING, CONFIG_MAP = "ServiceAccount", "Role", "RoleBinding", "ConfigMap"
KINDS = (SERVICE_ACCOUNT, ROLE, ROLE_BINDING, CONFIG_MAP)  # creation order
DELETION_ORDER = (ROLE_BINDING, ROLE, SERVICE_ACCOUNT, CONFIG_MAP)
MARKER = CONFIG_MAP  # created last, deleted last

# kind -> the object as last read or written, or None when it does not exist. A kind that is
# not a key is not known.
Children = Mapping[str, "dict[str, Any] | None"]


def _clean(value: Any) -> Any:
    """What the API server would give back for `value`: empty strings, lists and maps dropped
    (omitempty), so that a comparison sees only what differs."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v not in ("", [], {}, None)}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _labels_missing(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> dict[str, str]:
    want = desired["metadata"].get("labels") or {}
    have = (actual.get("metadata") or {}).get("labels") or {}
    return {k: v for k, v in want.items() if have.get(k) != v}


def config_map_patch(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that makes the ConfigMap hold rayguard's data and labels; empty when it
    does. Keys and labels someone else added are left alone."""
    patch: dict[str, Any] = {}
    have = actual.get("data") or {}
    data = {k: v for k, v in desired["data"].items() if have.get(k) != v}
    if data:
        patch["data"] = data
    labels = _labels_missing(desired, actual)
    if labels:
        patch["metadata"] = {"labels": labels}
    return patch


def rbac_drifted(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    """A Role's rules, or a RoleBinding's roleRef and subjects, are not rayguard's."""
    fields = ("rules",) if desired["kind"] == ROLE else ("roleRef", "subjects")
    return any(_clean(desired.get(f)) != _clean(actual.get(f)) for f in fields)


def autoscaler_steps(cluster: ClusterModel, actual: Children) -> list[Action]:
    """The writes that make the autoscaler's children match spec.autoscaling.enabled."""
    if not cluster.autoscaling.enabled:
        name = autoscaler_name(cluster.name)
        if all(actual.get(kind) is None for kind in KINDS):
            return []  # none left, or only kinds not known while the marker is gone
        why = "spec.autoscaling.enabled is false"
        return [Action("delete", kind, name, None, why) for kind in DELETION_ORDER
                if kind not in actual or actual[kind] is not None]
    actions: list[Action] = []
    for desired in build_autoscaler_children(cluster):
        kind, name = desired["kind"], desired["metadata"]["name"]
        current = actual.get(kind)
        if current is None:
            actions.append(Action("create", kind, name, desired))
        elif kind == CONFIG_MAP:
            patch = config_map_patch(desired, current)
            if patch:
                actions.append(Action("patch", kind, name, patch, "the autoscaler config changed"))
        elif kind in (ROLE, ROLE_BINDING) and rbac_drifted(desired, current):
            why = f"it is not rayguard's {kind} any more; it is created again"
            actions += [Action("delete", kind, name, None, why), Action("create", kind, name, desired)]
    return actions
