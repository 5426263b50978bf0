"""RayClusters and Secrets for the emulator's tests, written and read with the real clients."""
from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import ApiException

from testkit.kube import KubeApi

GROUP, VERSION, PLURAL = 'rayguard.dev', 'v1', 'rayclusters'
NS = 'default'


def raycluster(name: str, **fields: Any) -> dict[str, Any]:
    return {'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'RayCluster',
            'metadata': {'name': name}, 'spec': {'image': 'rayguard/node:0.1.0'}, **fields}


def create_cluster(api: KubeApi, name: str, **fields: Any) -> dict[str, Any]:
    return api.custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                      raycluster(name, **fields))


def get_cluster(api: KubeApi, name: str) -> dict[str, Any]:
    return api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)


def patch_cluster(api: KubeApi, name: str, body: Any, **kwargs: Any) -> dict[str, Any]:
    return api.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, body,
                                                     **kwargs)


def patch_cluster_status(api: KubeApi, name: str, body: Any) -> dict[str, Any]:
    return api.custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, name, body)


def owner_ref(obj: dict[str, Any]) -> dict[str, Any]:
    return {'apiVersion': obj['apiVersion'], 'kind': obj['kind'],
            'name': obj['metadata']['name'], 'uid': obj['metadata']['uid']}


def secret(name: str, *owners: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {'metadata': {'name': name, 'ownerReferences': [owner_ref(o) for o in owners], **meta},
            'stringData': {'k': 'v'}}


def secret_names(api: KubeApi, **kwargs: Any) -> list[str]:
    return [s.metadata.name for s in api.core.list_namespaced_secret(NS, **kwargs).items]


def status_of(call: Any, *args: Any, **kwargs: Any) -> int:
    with pytest.raises(ApiException) as excinfo:
        call(*args, **kwargs)
    return excinfo.value.status
