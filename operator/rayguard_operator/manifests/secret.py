"""Pure builder of the cluster's Secret: the Ray auth token and the Redis password.

The values are arguments: the reconciler generates them once, when the Secret is missing,
and `rayguard render` passes a placeholder. They never reach logs, events or status.
"""

from __future__ import annotations

from typing import Any

from rayguard_operator import names
from rayguard_operator.spec.model import ClusterModel


def build_secret(cluster: ClusterModel, ray_auth_token: str, redis_password: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": names.secret_name(cluster.name),
        "namespace": cluster.namespace,
        "labels": names.cluster_labels(cluster.name),
    }
    if cluster.uid:
        metadata["ownerReferences"] = [names.owner_reference(cluster.name, cluster.uid)]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        # Generated once and mounted into running pods: replacing a value would split the cluster.
        "immutable": True,
        "stringData": {
            names.SECRET_KEY_RAY_TOKEN: ray_auth_token,
            names.SECRET_KEY_REDIS_PASSWORD: redis_password,
        },
    }
