"""Ray's autoscaler config, generated from the model: what each node type advertises (the CPUs
Ray gets, the planned heap, not the container limit, the object store, GPUs and custom
resources), min/max, idle timeout and upscaling speed, and that Ray 2.60's own code accepts it:
its config validation, BatchingNodeProvider's assertions and its resource-demand scheduler."""

from __future__ import annotations

import copy
import functools
import json
import logging
from typing import Any

import pytest
from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.autoscaler.batching_node_provider import BatchingNodeProvider

from rayguard_node.contract import autoscaler as A
from rayguard_node.contract import settings as S
from rayguard_node.sizing.plan import BudgetSettings, NodeFacts, make_plan
from rayguard_operator.manifests.autoscaler import (
    ADVERTISE_LIMIT, autoscaling_config, build_autoscaler_children, build_config_map)
from rayguard_operator.manifests.pod import build_pod
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.spec.model import ClusterModel, parse_cluster

GiB = 1024**3


def body(mode: str = "Conservative", idle: int = 90) -> dict[str, Any]:
    limits = lambda cpu, memory, **extra: {"limits": {"cpu": cpu, "memory": memory, **extra}}  # noqa: E731
    return {"apiVersion": "rayguard.dev/v1", "kind": "RayCluster", "metadata": {"name": "acc", "namespace": "ml"},
            "spec": {
                "autoscaling": {"enabled": True, "idleTimeoutSeconds": idle, "upscalingMode": mode},
                "head": {"resources": limits("2", "4Gi")},
                "workerGroups": [
                    {"name": "cpu", "minReplicas": 1, "replicas": 1, "maxReplicas": 5, "resources": limits("3", "8Gi"),
                     "memory": {"objectStoreFraction": 0.2}},
                    {"name": "gpu", "replicas": 0, "maxReplicas": 2, "numCpus": 6, "rayResources": {"ssd": 2},
                     "resources": limits("8", "16Gi", **{"nvidia.com/gpu": "2"})},
                    {"name": "tpu", "replicas": 0, "maxReplicas": 1,
                     "resources": limits("4", "16Gi", **{"google.com/tpu": "4"})},
                ]}}


def model(data: dict[str, Any] | None = None) -> ClusterModel:
    return parse_cluster(data or body(), OperatorSettings())


def planned(role: str, limit_bytes: int, cpus: float, **settings: Any):  # type: ignore[no-untyped-def]
    """The plan the runtime makes in the pod, computed here on its own."""
    return make_plan(role, NodeFacts(limit_bytes, "pod-spec", cpus, None, True), BudgetSettings(**settings))


def test_each_group_advertises_what_its_pods_give_ray() -> None:
    types = autoscaling_config(model())["available_node_types"]
    assert set(types) == {A.HEAD_NODE_TYPE, "cpu", "gpu", "tpu"}
    cpu = planned("worker", 8 * GiB, 3, object_store_fraction=0.2)
    gpu = planned("worker", 16 * GiB, 8, num_cpus=6)
    tpu = planned("worker", 16 * GiB, 4)
    head = planned("head", 4 * GiB, 2, num_cpus=0)
    assert types["cpu"]["resources"] == {"CPU": 3, "memory": cpu.heap_bytes, "object_store_memory": cpu.object_store_bytes}
    assert types["gpu"]["resources"] == {"CPU": 6, "memory": gpu.heap_bytes, "object_store_memory": gpu.object_store_bytes,
                                         "GPU": 2, "ssd": 2}
    assert types["tpu"]["resources"] == {"CPU": 4, "memory": tpu.heap_bytes, "object_store_memory": tpu.object_store_bytes,
                                         "TPU": 4}
    # The head takes no tasks by default: 0 CPUs, 0 GPUs; its heap is what is left beside Redis.
    assert types["head"]["resources"] == {"CPU": 0, "memory": head.heap_bytes,
                                          "object_store_memory": head.object_store_bytes, "GPU": 0}


def test_memory_is_the_planned_heap_not_the_limit() -> None:
    cluster = model()
    for group in cluster.groups:
        advertised = autoscaling_config(cluster)["available_node_types"][
            A.HEAD_NODE_TYPE if group.role == "head" else group.name]["resources"]["memory"]
        assert advertised == group.plan.heap_bytes < group.plan.limit_bytes
        assert advertised < group.resources.memory_limit_bytes - group.plan.object_store_bytes
    limit_types = autoscaling_config(cluster, ADVERTISE_LIMIT)["available_node_types"]
    assert limit_types["cpu"]["resources"]["memory"] == 8 * GiB  # what KubeRay would advertise


def test_the_config_agrees_with_the_pods() -> None:
    """The same NodeGroup.plan sizes both: the env the pod builder sets says the same numbers."""
    cluster = model()
    types = autoscaling_config(cluster)["available_node_types"]
    for group in cluster.groups:
        env = {e["name"]: e.get("value") for e in build_pod(cluster, group, "p")["spec"]["containers"][0]["env"]}
        resources = types[A.HEAD_NODE_TYPE if group.role == "head" else group.name]["resources"]
        assert env[S.NUM_CPUS.env] == str(resources["CPU"])
        assert env[S.OBJECT_STORE_BYTES.env] == str(resources["object_store_memory"])
        assert env.get(S.NUM_GPUS.env) == (str(resources["GPU"]) if "GPU" in resources else None)


def test_min_max_and_the_global_cap() -> None:
    config = autoscaling_config(model())
    types = config["available_node_types"]
    assert {k: (t["min_workers"], t["max_workers"]) for k, t in types.items()} == {
        "head": (0, 0), "cpu": (1, 5), "gpu": (0, 2), "tpu": (0, 1)}
    assert config["max_workers"] == 5 + 2 + 1
    data = body()
    for group in data["spec"]["workerGroups"]:
        group["maxReplicas"] = 1000
    assert autoscaling_config(model(data))["max_workers"] == 1000  # the cluster cap (README, "Scale caps")


@pytest.mark.parametrize("mode, speed", [("Default", 1000.0), ("Aggressive", 1000.0), ("Conservative", 1.0)])
def test_idle_timeout_and_upscaling_speed(mode: str, speed: float) -> None:
    config = autoscaling_config(model(body(mode, idle=90)))
    assert config["idle_timeout_minutes"] == 1.5
    assert config["upscaling_speed"] == speed == A.UPSCALING_SPEED[mode]


def test_the_provider_section() -> None:
    config = autoscaling_config(model())
    assert config["cluster_name"] == "acc" and config["head_node_type"] == A.HEAD_NODE_TYPE
    assert config["provider"] == {
        "type": "external", "module": A.PROVIDER_CLASS, "namespace": "ml", "cluster_name": "acc",
        "disable_node_updaters": True, "disable_launch_config_check": True, "foreground_node_launch": True,
        "worker_liveness_check": False}
    # Ray's BatchingNodeProvider asserts the first three in its constructor.
    provider = BatchingNodeProvider(config["provider"], config["cluster_name"])
    assert provider.node_data_dict == {}
    for key in ("disable_node_updaters", "disable_launch_config_check", "foreground_node_launch"):
        broken = dict(config["provider"], **{key: False})
        with pytest.raises(AssertionError):
            BatchingNodeProvider(broken, "acc")


def test_ray_validates_and_prepares_it(caplog: pytest.LogCaptureFixture) -> None:
    config = autoscaling_config(model())
    validate_config(config)
    with caplog.at_level(logging.ERROR):
        prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["available_node_types"] == config["available_node_types"]
    assert prepared["max_workers"] == config["max_workers"]
    broken = copy.deepcopy(config)
    broken["available_node_types"]["cpu"]["resources"]["memory"] = 1.5  # Ray wants whole numbers
    with pytest.raises(Exception, match="is not of type 'integer'"):
        validate_config(broken)


def test_memory_demand_scales_out_by_the_heap() -> None:
    """Two tasks of memory=heap-1 MiB: one per node with the heap advertised; advertised as the
    whole limit (KubeRay), Ray's scheduler packs both onto one node whose heap holds one."""
    cluster = model()
    heap = cluster.group("cpu").plan.heap_bytes  # type: ignore[union-attr]
    demand = [{"CPU": 1, "memory": heap - 2**20}] * 2
    scorer = functools.partial(_default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary({}))
    chosen = {}
    for advertise in ("heap", ADVERTISE_LIMIT):
        types = autoscaling_config(cluster, advertise)["available_node_types"]
        types = {k: v for k, v in types.items() if k in ("head", "cpu")}
        added, unmet = get_nodes_for(types, {}, "head", 10, demand, scorer)
        chosen[advertise] = (dict(added), unmet)
    assert chosen["heap"] == ({"cpu": 2}, [])
    assert chosen[ADVERTISE_LIMIT] == ({"cpu": 1}, [])  # 3 CPUs, 8 GiB "memory": both on one


def test_the_config_map_carries_the_sorted_json() -> None:
    cluster = model()
    config_map = build_config_map(cluster)
    text = config_map["data"][A.CONFIG_KEY]
    assert json.loads(text) == autoscaling_config(cluster)
    assert text == json.dumps(autoscaling_config(cluster), sort_keys=True)
    assert config_map["metadata"]["name"] == A.autoscaler_name("acc") == "acc-autoscaler"


def test_nothing_without_autoscaling() -> None:
    data = body()
    data["spec"]["autoscaling"]["enabled"] = False
    assert build_autoscaler_children(model(data)) == []
