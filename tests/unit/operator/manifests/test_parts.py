"""The template's parts: digests that name what changed when a pod's template hash differs."""

from __future__ import annotations

import copy
from typing import Any, Iterator

import pytest
import yaml

from rayguard_operator import names
from rayguard_operator.manifests.parts import OTHER, PARTS, changed_parts, format_parts, read_parts, template_parts
from rayguard_operator.manifests.pod import build_pod, pod_template
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.spec.model import parse_cluster
from tests.paths import REPO_ROOT


def template(edit: Any = None, group: str = "head") -> dict[str, Any]:
    body = yaml.safe_load((REPO_ROOT / "examples" / "raycluster.yaml").read_text())
    if edit is not None:
        edit(body["spec"])
    model = parse_cluster(body, OperatorSettings())
    return pod_template(model, model.group(group))  # type: ignore[arg-type]


def parts_of(t: dict[str, Any]) -> dict[str, str]:
    return read_parts(t["metadata"]["annotations"][names.ANNOTATION_TEMPLATE_PARTS])


def test_every_pod_records_its_parts_outside_the_hash() -> None:
    t = template()
    assert list(parts_of(t)) == list(PARTS)
    assert parts_of(t) == template_parts(t)  # the stamped annotations are not part of any digest
    body = yaml.safe_load((REPO_ROOT / "examples" / "raycluster.yaml").read_text())
    model = parse_cluster(body, OperatorSettings())
    pod = build_pod(model, model.head, "demo-head-x")
    assert pod["metadata"]["annotations"][names.ANNOTATION_TEMPLATE_PARTS] == format_parts(parts_of(t))


def test_format_and_read_round_trip_and_tolerate_junk() -> None:
    parts = {"image": "0123abcd", "other": "ffffffff"}
    assert read_parts(format_parts(parts)) == parts
    assert read_parts(None) == {} and read_parts("") == {} and read_parts("x,=y,image=") == {}


@pytest.mark.parametrize("edit, changed", [
    (lambda s: s.update(image="rayguard/node:9"), ("image",)),
    (lambda s: s["memory"].update(heapFraction=0.4), ("memory",)),
    (lambda s: s["memory"].update(quota={"tolerance": 2}), ("memory.quota",)),
    (lambda s: s["memory"].update(profiling={"enabled": True}), ("memory.profiling",)),
    (lambda s: s["head"].update(numCpus=1), ("numCpus",)),
    (lambda s: s["head"].update(rayStartParams={"disable-usage-stats": True}), ("rayStartParams",)),
    (lambda s: s["head"]["resources"]["requests"].update(cpu="500m"), ("resources",)),
    (lambda s: s["head"].update(template={"spec": {"nodeSelector": {"a": "b"}}}), (OTHER,)),
], ids=["image", "memory", "quota", "profiling", "numCpus", "rayStartParams", "requests", "overlay"])
def test_a_change_names_its_part(edit: Any, changed: tuple[str, ...]) -> None:
    before, after = template(), template(edit)
    assert before["metadata"]["annotations"][names.ANNOTATION_TEMPLATE_HASH] != \
        after["metadata"]["annotations"][names.ANNOTATION_TEMPLATE_HASH]
    shown = changed_parts(parts_of(before), parts_of(after))
    assert tuple(p.split(" ")[0] for p in shown) == changed, shown


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))
    else:
        yield path


@pytest.mark.parametrize("group", ["head", "highmem"])
def test_the_parts_cover_the_whole_template(group: str) -> None:
    """Whatever leaf of the template changes, some part's digest changes with it."""
    t = template(group=group)
    base = template_parts(t)
    ours = (names.ANNOTATION_TEMPLATE_HASH, names.ANNOTATION_TEMPLATE_PARTS)
    leaves = [p for p in _leaves(t) if not (len(p) == 3 and p[2] in ours)]
    assert len(leaves) > 100
    for path in leaves:
        edited = copy.deepcopy(t)
        node = edited
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = "changed"
        assert template_parts(edited) != base, path


def test_no_parts_recorded_means_nothing_named() -> None:
    assert changed_parts({}, parts_of(template())) == ()
