"""Pure builders of the head and worker pods. No client, no clock, no kopf.

A pod is built in two halves. The template (labels, annotations, spec, with the group's
overlay merged in) is hashed into the `rayguard.dev/template-hash` annotation: any change to
it, and only such a change, makes the pod outdated (the cluster's upgradeStrategy says whether
the reconciler replaces it); `rayguard.dev/template-parts` records which parts it had
(`parts.py`), to say what changed when an outdated pod stays. The identity
(name, namespace, owner reference) is added afterwards and is not hashed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from rayguard_node.contract import settings as S
from rayguard_node.contract.accelerators import resources_json
from rayguard_node.contract.autoscaler import autoscaler_name

from rayguard_operator import names
from rayguard_operator.manifests.autoscaler import build_sidecar, sidecar_volumes
from rayguard_operator.manifests.parts import format_parts, template_parts
from rayguard_operator.spec.gcs import SecretKeyRef
from rayguard_operator.spec.model import ClusterModel, NodeGroup
# The restricted securityContexts live with the overlay rules, which keep them in every pod.
from rayguard_operator.spec.overlay import container_security, merge_overlay, pod_security_context

SECRETS_DEFAULT_MODE = 0o440  # group-readable through fsGroup; the runtime runs as non-root


def _value(name: str, value: object) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def _field_ref(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def num_cpus_env(group: NodeGroup) -> int | None:
    """RAYGUARD_NUM_CPUS: the spec's numCpus (0 on the head by default), else the plan's count
    from the CPU limit; None when neither exists and the runtime must read the node's."""
    return group.ray_num_cpus


def ray_start_params(group: NodeGroup) -> dict[str, Any]:
    """The group's rayStartParams plus the ports rayguard fixes (the model refuses overrides)."""
    fixed: dict[str, Any] = {"metrics-export-port": names.PORT_METRICS[1]}
    if group.role == names.HEAD:
        fixed.update({"dashboard-port": names.PORT_DASHBOARD[1], "ray-client-server-port": names.PORT_CLIENT[1]})
    return {**fixed, **group.ray_start_params}


def _secret_ref(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def gcs_env(cluster: ClusterModel) -> list[dict[str, Any]]:
    """GCS fault tolerance (spec/gcs.py), in every pod: the head starts Ray's GCS on the external
    Redis, and every node writes its reports there. The password and user by reference only."""
    gcs = cluster.gcs
    if gcs is None:
        return []
    env = [_value(S.GCS_REDIS_ADDRESS.env, gcs.redis_address), _value(S.GCS_STORAGE_NAMESPACE.env, gcs.namespace)]
    if gcs.password_secret is not None:
        env.append(_secret_ref(S.GCS_REDIS_PASSWORD.env, gcs.password_secret))
    if gcs.username_secret is not None:
        env.append(_secret_ref(S.GCS_REDIS_USERNAME.env, gcs.username_secret))
    return env


def build_env(cluster: ClusterModel, group: NodeGroup) -> list[dict[str, Any]]:
    memory, plan, head = group.memory, group.plan, group.role == names.HEAD
    env = [
        _field_ref(S.POD_NAME.env, "metadata.name"),
        _field_ref(S.POD_NAMESPACE.env, "metadata.namespace"),
        _field_ref(S.NODE_NAME_ENV, "spec.nodeName"),
        {"name": S.LIMIT_BYTES.env, "valueFrom": {"resourceFieldRef": {
            "containerName": names.CONTAINER, "resource": "limits.memory", "divisor": "1"}}},
        _value(S.ROLE.env, group.role),
        _value(S.CLUSTER.env, cluster.name),
        _value(S.GROUP.env, group.name),
    ]
    if not head:
        env.append(_value(S.HEAD_ADDRESS.env, names.head_address(cluster.name, cluster.namespace)))
    env += [
        _value(S.RAY_AUTH_TOKEN_FILE.env, f"{names.SECRETS_DIR}/{names.SECRET_KEY_RAY_TOKEN}"),
        _value(S.REDIS_PASSWORD_FILE.env, f"{names.SECRETS_DIR}/{names.SECRET_KEY_REDIS_PASSWORD}"),
        _value(S.REDIS_PORT.env, names.PORT_REDIS[1]),
        _value(S.HEALTH_PORT.env, names.PORT_HEALTH[1]),
        _value(S.RAY_TEMP_DIR.env, names.RAY_TEMP_DIR),
        *gcs_env(cluster),
    ]
    if head and cluster.autoscaling.enabled:  # the sidecar runs Ray's autoscaler: no monitor in ray start
        env.append(_value(S.EXTERNAL_AUTOSCALER.env, "true"))
    cpus = num_cpus_env(group)
    if cpus is not None:
        env.append(_value(S.NUM_CPUS.env, cpus))
    if group.num_gpus is not None:  # None: a worker without a GPU limit, where Ray counts them
        env.append(_value(S.NUM_GPUS.env, group.num_gpus))
    if group.ray_resources:
        env.append(_value(S.RAY_RESOURCES.env, resources_json(group.ray_resources)))
    # The exact object store: /dev/shm is sized to the same number, so the runtime fits it.
    env += [
        _value(S.OBJECT_STORE_BYTES.env, plan.object_store_bytes),
        _value(S.OBJECT_STORE_FRACTION.env, memory.object_store_fraction),
        _value(S.OBJECT_STORE_MAX_BYTES.env, memory.object_store_max_bytes),
    ]
    if head:  # the head owns Redis, its cap and the ledger's flush policy
        env += [_value(S.REDIS_FRACTION.env, memory.redis_fraction),
                _value(S.REDIS_MAX_BYTES.env, memory.redis_max_bytes),
                _value(S.FLUSH_WHEN_AT_LEAST_BYTES.env, memory.flush_when_at_least_bytes),
                _value(S.FLUSH_PERIOD_SECS.env, memory.flush_period_secs),
                _value(S.FLUSH_NUM_ENTRIES_EACH_TIME.env, memory.flush_num_entries_each_time)]
    env += [
        _value(S.HEAP_FRACTION.env, memory.heap_fraction),
        _value(S.USAGE_THRESHOLD.env, memory.usage_threshold),
        _value(S.MONITOR_REFRESH_MS.env, memory.monitor_refresh_ms),
        _value(S.GRACE_SECONDS.env, names.GRACE_SECONDS),
        _value(S.QUOTA_ENFORCEMENT.env, cluster.quota.enforcement),
        _value(S.QUOTA_TOLERANCE.env, cluster.quota.tolerance),
        _value(S.QUOTA_GRACE_SECONDS.env, cluster.quota.grace_seconds),
        _value(S.RAY_START_PARAMS.env, json.dumps(ray_start_params(group), sort_keys=True, separators=(",", ":"))),
    ]
    if group.profiling.enabled:  # only then: a cluster that does not profile keeps its pods
        env += [_value(S.PROFILE.env, "true"),
                _value(S.PROFILE_MATCH.env, ",".join(group.profiling.match)),
                _value(S.PROFILE_MAX_BYTES.env, group.profiling.max_bytes)]
    return env


# The container's command: `rayguard-node run`, unless the image lacks it. A group's own image
# (a CUDA base, say) that does not contain the runtime would otherwise fail with the runtime's
# "executable file not found" and crash-loop with nothing in its log; this says what is wrong in
# one line (the termination message too). The image and role are arguments, never shell text.
RUNTIME_CHECK = (
    'command -v rayguard-node >/dev/null 2>&1 || { echo "rayguard: image $1 lacks the rayguard runtime'
    ' (no rayguard-node on its PATH); a group image must contain it: build it from node_image/Dockerfile'
    ' with --build-arg BASE_IMAGE=<your image>" >&2; exit 127; }; exec rayguard-node run --role "$2"')


def runtime_command(image: str, role: str) -> list[str]:
    return ["sh", "-c", RUNTIME_CHECK, "rayguard", image, role]


def _probe(path: str, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": names.PORT_HEALTH[0]}, "timeoutSeconds": 5, **timing}


def build_container(cluster: ClusterModel, group: NodeGroup) -> dict[str, Any]:
    ports = names.HEAD_CONTAINER_PORTS if group.role == names.HEAD else names.WORKER_CONTAINER_PORTS
    resources: dict[str, Any] = {"limits": dict(group.resources.limits)}
    if group.resources.requests:
        resources["requests"] = dict(group.resources.requests)
    return {
        "name": names.CONTAINER,
        "image": cluster.image_of(group),
        "command": runtime_command(cluster.image_of(group), group.role),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": build_env(cluster, group),
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports],
        "resources": resources,
        "volumeMounts": [
            {"name": names.VOLUME_SHM, "mountPath": names.SHM_PATH},
            {"name": names.VOLUME_SECRETS, "mountPath": names.SECRETS_DIR, "readOnly": True},
            {"name": names.VOLUME_RAY_TEMP, "mountPath": names.RAY_TEMP_DIR},
        ],
        # Ray takes a while to start; liveness only begins once the startup probe passed.
        "startupProbe": _probe("/healthz", periodSeconds=5, failureThreshold=60),
        "livenessProbe": _probe("/healthz", periodSeconds=10, failureThreshold=6),
        "readinessProbe": _probe("/readyz", periodSeconds=5, failureThreshold=3),
        "securityContext": container_security(),
    }


def _base_template(cluster: ClusterModel, group: NodeGroup) -> dict[str, Any]:
    template: dict[str, Any] = {
        "metadata": {"labels": names.node_labels(cluster.name, group.role, group.name), "annotations": {}},
        "spec": {
            "containers": [build_container(cluster, group)],
            "volumes": [
                # Sized to exactly the planned object store; memory-backed, so it counts
                # against the container's limit, which the plan already accounts for.
                {"name": names.VOLUME_SHM,
                 "emptyDir": {"medium": "Memory", "sizeLimit": str(group.plan.object_store_bytes)}},
                {"name": names.VOLUME_SECRETS,
                 "secret": {"secretName": names.secret_name(cluster.name), "defaultMode": SECRETS_DEFAULT_MODE}},
                {"name": names.VOLUME_RAY_TEMP, "emptyDir": {}},
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": names.TERMINATION_GRACE_SECONDS,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(),
        },
    }
    if group.role == names.HEAD and cluster.autoscaling.enabled:  # manifests/autoscaler.py
        spec = template["spec"]
        spec["containers"].append(build_sidecar(cluster))
        spec["volumes"] += sidecar_volumes(cluster)
        spec["serviceAccountName"] = autoscaler_name(cluster.name)
    return template


def pod_template(cluster: ClusterModel, group: NodeGroup) -> dict[str, Any]:
    """Labels, annotations and spec of the group's pods, the overlay merged, hash stamped."""
    template = merge_overlay(_base_template(cluster, group), dict(group.template), container_security())
    for container in template["spec"]["containers"]:  # the command names the image the overlay chose
        if container["name"] == names.CONTAINER:
            container["command"] = runtime_command(container["image"], group.role)
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    annotations = template["metadata"]["annotations"]
    # Both stamped after hashing: neither is part of the hash (adding the parts replaced no pod).
    parts = format_parts(template_parts(template))
    annotations[names.ANNOTATION_TEMPLATE_HASH] = digest[:16]
    annotations[names.ANNOTATION_TEMPLATE_PARTS] = parts
    return template


def template_hash(cluster: ClusterModel, group: NodeGroup) -> str:
    return pod_template(cluster, group)["metadata"]["annotations"][names.ANNOTATION_TEMPLATE_HASH]


def build_pod(cluster: ClusterModel, group: NodeGroup, name: str,
              template: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full Pod. Pass `template` (from pod_template) to build many pods of one group."""
    template = copy.deepcopy(template if template is not None else pod_template(cluster, group))
    metadata: dict[str, Any] = {"name": name, "namespace": cluster.namespace, **template["metadata"]}
    if cluster.uid:
        metadata["ownerReferences"] = [names.owner_reference(cluster.name, cluster.uid)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
