"""Autoscaling: what the operator, the head pod's autoscaler sidecar and local mode agree on.

The operator writes Ray's autoscaler config (generated from the same ClusterModel and memory
plans as the pods) into a ConfigMap mounted in the sidecar; the sidecar runs Ray 2.60's own
autoscaler (`ray.autoscaler._private.monitor.Monitor`) with rayguard's node provider, a
`ray.autoscaler.batching_node_provider.BatchingNodeProvider` loaded through Ray's `external`
provider type. The provider reads the RayCluster and its pods and patches the RayCluster's
`replicas` and `workersToDelete`; the operator makes the pods. Nothing else scales.
"""

from __future__ import annotations

# The sidecar container in the head pod, and what it runs.
CONTAINER = "autoscaler"
COMMAND = ("rayguard-node", "autoscaler")

# The sidecar's environment (set by the operator; local mode passes the same values directly).
CLUSTER_ENV = "RAYGUARD_AUTOSCALER_CLUSTER"  # the RayCluster's name
NAMESPACE_ENV = "RAYGUARD_AUTOSCALER_NAMESPACE"  # its namespace
CONFIG_ENV = "RAYGUARD_AUTOSCALER_CONFIG"  # path of the JSON config file, re-read every update
GCS_ADDRESS_ENV = "RAYGUARD_AUTOSCALER_GCS_ADDRESS"  # host:port of the head's GCS
RAY_AUTH_TOKEN_FILE_ENV = "RAYGUARD_RAY_AUTH_TOKEN_FILE"  # the same setting the runtime reads

# The ConfigMap holding the config, and where the sidecar sees it.
CONFIG_KEY = "autoscaling-config.json"
CONFIG_DIR = "/etc/rayguard/autoscaler"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
VOLUME = "rayguard-autoscaler"

# Ray's `external` provider type imports this class (ray/autoscaler/_private/providers.py).
PROVIDER_CLASS = "rayguard_node.autoscaler.provider.RayguardNodeProvider"
# Keys of the config's `provider` section naming the RayCluster (Ray also passes the top-level
# `cluster_name`, the same name, to the provider's constructor).
PROVIDER_NAMESPACE_KEY = "namespace"
PROVIDER_CLUSTER_KEY = "cluster_name"
# The head's node type in the config; the worker groups' node types are their group names.
HEAD_NODE_TYPE = "head"

# What the provider reads and patches: the RayCluster (group/version/plural) and its pods, by the
# operator's labels (operator names.py holds the same values; a test keeps them equal).
RAYCLUSTER_GROUP, RAYCLUSTER_VERSION, RAYCLUSTER_PLURAL = "rayguard.dev", "v1", "rayclusters"
LABEL_CLUSTER = "rayguard.dev/cluster"
LABEL_NODE_TYPE = "rayguard.dev/node-type"  # head | worker
LABEL_GROUP = "rayguard.dev/group"  # the worker group's name

# Why the autoscaler last changed a group's replicas, for the operator's ScaledUp/ScaledDown
# Events: a JSON object {group: reason} the provider sets with the same patch as replicas.
ANNOTATION_SCALE_REASON = "rayguard.dev/autoscaler-reason"
REASON_PENDING = "pending demand"
REASON_IDLE = "idle"

# spec.autoscaling.upscalingMode -> Ray's upscaling_speed, as KubeRay maps it, so that a
# cluster moved from KubeRay scales the same way: Conservative launches at most as many
# pending nodes as the cluster has; Default and Aggressive are not rate-limited.
UPSCALING_SPEED = {"Conservative": 1.0, "Default": 1000.0, "Aggressive": 1000.0}

# The sidecar's own container resources when spec.autoscaling.resources is not set: Ray's
# monitor and the kubernetes client, measured at well under this (README, "Autoscaling").
DEFAULT_LIMITS = {"cpu": "500m", "memory": "512Mi"}


def autoscaler_name(cluster: str) -> str:
    """The ServiceAccount, Role, RoleBinding and ConfigMap of one cluster's autoscaler."""
    return f"{cluster}-autoscaler"
