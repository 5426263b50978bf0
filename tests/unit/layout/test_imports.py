"""The layering rules of docs/architecture.md, checked on the source's import graph."""

from __future__ import annotations

import pytest

from tests.unit.layout.imports import cycles, import_graph, layer_of, modules

# What the operator may use of the node package: the shared layers (docs/architecture.md).
OPERATOR_MAY_IMPORT = ("rayguard_node.contract", "rayguard_node.sizing", "rayguard_node.errors")
# ... and local mode also the scratch cgroups, to give each local pod its own, and the
# autoscaler, which it runs in-process where a head pod runs it in a sidecar.
LOCAL_MODE_MAY_IMPORT = OPERATOR_MAY_IMPORT + ("rayguard_node.cgroup.scratch", "rayguard_node.autoscaler")

# Lower layers never import higher ones. Each layer lists what it may import (besides itself).
NODE_LAYERS = {
    "rayguard_node.errors": (),
    "rayguard_node.contract": ("rayguard_node.errors", "rayguard_node.sizing.quantity"),
    "rayguard_node.sizing": ("rayguard_node.errors", "rayguard_node.contract", "rayguard_node.cgroup"),
    "rayguard_node.cgroup": ("rayguard_node.errors",),
    "rayguard_node.guard": ("rayguard_node.errors", "rayguard_node.contract", "rayguard_node.sizing",
                            "rayguard_node.cgroup"),
    "rayguard_node.reporting": ("rayguard_node.errors", "rayguard_node.contract", "rayguard_node.cgroup"),
    "rayguard_node.profiling": ("rayguard_node.errors", "rayguard_node.contract", "rayguard_node.cgroup"),
    # The autoscaler sidecar: Ray's autoscaler and the kubernetes client, and the contract.
    "rayguard_node.autoscaler": ("rayguard_node.errors", "rayguard_node.contract"),
}
OPERATOR_LAYERS = {
    "rayguard_operator.spec": ("rayguard_operator.errors", "rayguard_operator.names", "rayguard_operator.settings"),
    "rayguard_operator.manifests": ("rayguard_operator.errors", "rayguard_operator.names",
                                    "rayguard_operator.settings", "rayguard_operator.spec"),
    "rayguard_operator.kube": ("rayguard_operator.errors", "rayguard_operator.names"),
    # `rayguard top`: the head's Redis, through the Kubernetes API alone.
    "rayguard_operator.top": ("rayguard_operator.errors", "rayguard_operator.names", "rayguard_operator.kube"),
    # `rayguard profile fetch`: pods listed and exec'd with the user's own credentials.
    "rayguard_operator.profile": ("rayguard_operator.errors", "rayguard_operator.names", "rayguard_operator.kube"),
    # The metrics registry: a bottom layer that the syncer, the OOM path and startup record into.
    "rayguard_operator.metrics": (),
}


def test_the_graph_sees_the_packages() -> None:
    graph = import_graph()
    assert len(graph) > 50
    # Known edges, so that a graph that lost its edges cannot pass the rules below.
    assert "rayguard_node.sizing.plan" in graph["rayguard_operator.spec.model"]
    assert "rayguard_node.guard.killer" in graph["rayguard_node.guard.loop"]


def test_there_is_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def _allowed(target: str, prefixes: tuple[str, ...]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def test_the_operator_uses_only_the_nodes_shared_layers() -> None:
    wrong = []
    for module, targets in import_graph().items():
        if not module.startswith("rayguard_operator"):
            continue
        allowed = LOCAL_MODE_MAY_IMPORT if module.startswith("rayguard_operator.local") else OPERATOR_MAY_IMPORT
        wrong += [f"{module} -> {t}" for t in sorted(targets)
                  if t.startswith("rayguard_node") and not _allowed(t, allowed)]
    assert wrong == []


def test_the_node_never_imports_the_operator() -> None:
    wrong = [f"{m} -> {t}" for m, targets in import_graph().items() if m.startswith("rayguard_node")
             for t in targets if t.startswith("rayguard_operator")]
    assert wrong == []


@pytest.mark.parametrize("layers", [NODE_LAYERS, OPERATOR_LAYERS], ids=["node", "operator"])
def test_lower_layers_import_only_what_is_below_them(layers: dict[str, tuple[str, ...]]) -> None:
    wrong = []
    for module, targets in import_graph().items():
        layer = layer_of(module)
        if layer not in layers:
            continue
        allowed = layers[layer] + (layer, "rayguard_node.contract", "rayguard_node.sizing",
                                   "rayguard_node.errors")
        if layer.startswith("rayguard_node"):
            allowed = layers[layer] + (layer,)
        wrong += [f"{module} -> {t}" for t in sorted(targets) if not _allowed(t, allowed)]
    assert wrong == []


def test_no_module_is_over_400_lines() -> None:
    long = {name: n for name, module in modules().items()
            if (n := len(module.path.read_text().splitlines())) > 400}
    assert long == {}
