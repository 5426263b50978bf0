"""Every name the operator gives to or reads from Kubernetes, defined once.

Child names, label keys, selectors, annotation keys, port numbers and in-pod paths live here
so that builders, the reconciler, status and tests agree on them. Label and container names
are part of the contract with users (docs/architecture.md, "The contract between pod and
runtime").
"""

from __future__ import annotations

from rayguard_node.contract.settings import POD_ENV

GROUP = "rayguard.dev"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RayCluster"
PLURAL = "rayclusters"

# Labels (a contract with users: selectors and dashboards use them).
LABEL_CLUSTER = f"{GROUP}/cluster"
LABEL_NODE_TYPE = f"{GROUP}/node-type"
LABEL_GROUP = f"{GROUP}/group"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "rayguard"
HEAD, WORKER = "head", "worker"
# The head's value of rayguard.dev/group, and its key in status.memoryPlan.
HEAD_GROUP = "head"

# Annotations.
ANNOTATION_TEMPLATE_HASH = f"{GROUP}/template-hash"
# Digests of the template's parts (manifests/parts.py): what changed when a pod is outdated.
ANNOTATION_TEMPLATE_PARTS = f"{GROUP}/template-parts"
# On a RayCluster with GCS fault tolerance: "true" leaves its keys in the external Redis on deletion.
ANNOTATION_SKIP_REDIS_CLEANUP = f"{GROUP}/skip-external-redis-cleanup"
# Keys under this prefix belong to rayguard; a template overlay may not set them.
RESERVED_PREFIX = f"{GROUP}/"
# kopf's own bookkeeping (finalizer, progress, last-handled configuration).
KOPF_PREFIX = GROUP
FINALIZER = f"{GROUP}/finalizer"

CONTAINER = "ray-node"
SECRET_KEY_RAY_TOKEN = "ray-auth-token"
SECRET_KEY_REDIS_PASSWORD = "redis-password"
SECRET_PLACEHOLDER = "<generated>"

# Volumes and where they are mounted.
VOLUME_SHM = "dshm"
VOLUME_SECRETS = "rayguard-secrets"
VOLUME_RAY_TEMP = "ray-temp"
SHM_PATH = "/dev/shm"
SECRETS_DIR = "/etc/rayguard/secrets"
RAY_TEMP_DIR = "/tmp/ray"
RESERVED_VOLUMES = (VOLUME_SHM, VOLUME_SECRETS, VOLUME_RAY_TEMP)
RESERVED_MOUNT_PATHS = (SHM_PATH, SECRETS_DIR, RAY_TEMP_DIR)

# Ports: (name, number). Container port names are at most 15 characters.
PORT_GCS = ("gcs", 6379)
PORT_CLIENT = ("client", 10001)
PORT_DASHBOARD = ("dashboard", 8265)
PORT_REDIS = ("redis", 6380)
PORT_METRICS = ("metrics", 8080)
PORT_HEALTH = ("health", 8079)
HEAD_SERVICE_PORTS = (PORT_GCS, PORT_CLIENT, PORT_DASHBOARD, PORT_REDIS, PORT_METRICS)
HEAD_CONTAINER_PORTS = HEAD_SERVICE_PORTS + (PORT_HEALTH,)
WORKER_CONTAINER_PORTS = (PORT_METRICS, PORT_HEALTH)

GRACE_SECONDS = 25
TERMINATION_GRACE_SECONDS = GRACE_SECONDS + 5
RUN_AS_ID = 1000  # the node image's numeric non-root user


def secret_name(cluster: str) -> str:
    return f"{cluster}-secret"


def head_service_name(cluster: str) -> str:
    return f"{cluster}-head"


def head_pod_prefix(cluster: str) -> str:
    return f"{cluster}-head-"


def worker_pod_prefix(cluster: str, group: str) -> str:
    return f"{cluster}-worker-{group}-"


def head_address(cluster: str, namespace: str) -> str:
    """host:port of the head's GCS, as workers reach it through the head Service."""
    return f"{head_service_name(cluster)}.{namespace}.svc:{PORT_GCS[1]}"


def cluster_labels(cluster: str) -> dict[str, str]:
    return {LABEL_CLUSTER: cluster, LABEL_MANAGED_BY: MANAGED_BY}


def node_labels(cluster: str, node_type: str, group: str) -> dict[str, str]:
    return {**cluster_labels(cluster), LABEL_NODE_TYPE: node_type, LABEL_GROUP: group}


def head_selector(cluster: str) -> dict[str, str]:
    return {LABEL_CLUSTER: cluster, LABEL_NODE_TYPE: HEAD}


def cluster_selector(cluster: str) -> str:
    """Label selector (as a string) for every pod of one cluster."""
    return f"{LABEL_CLUSTER}={cluster}"


def owner_reference(cluster: str, uid: str) -> dict[str, object]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": cluster, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


# Env the pod builder sets: the rayguard-node contract (rayguard_node.contract.settings) and
# the downward API. A template overlay may add other variables, not these.
RESERVED_ENV = POD_ENV

# What the API server uses for generateName suffixes: no vowels, no look-alike digits.
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
SUFFIX_LENGTH = 5
