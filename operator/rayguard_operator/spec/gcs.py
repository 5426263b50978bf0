"""spec.gcsFaultTolerance: Ray's GCS on an external Redis (README, "GCS fault tolerance").

Configured when it names a Redis (`redisAddress`; the CRD: "Empty means off"). The password
and the optional ACL user come from Secrets in the RayCluster's namespace, by reference only:
the pod builder turns them into `secretKeyRef` env (`manifests/pod.py`), so no value of them is
ever in a pod spec, the model, an Event or the status. The storage namespace defaults to the
RayCluster's uid; every key of the cluster in the Redis starts with `RAY<namespace>@`
(`rayguard_node.contract.gcs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayguard_node.contract.gcs import address_problem, key_prefix, namespace_problem

from rayguard_operator.errors import SpecError
from rayguard_operator.spec.fields import known_object

PATH = "spec.gcsFaultTolerance"
FIELDS = {"redisAddress", "passwordSecret", "usernameSecret", "externalStorageNamespace"}
SECRET_REF_FIELDS = {"name", "key"}


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class GcsFaultTolerance:
    redis_address: str
    namespace: str  # Ray's external_storage_namespace: the spec's, else the RayCluster's uid
    password_secret: SecretKeyRef | None = None
    username_secret: SecretKeyRef | None = None

    @property
    def key_prefix(self) -> str:
        return key_prefix(self.namespace)


def _secret_ref(data: Any, path: str) -> SecretKeyRef | None:
    if data is None:
        return None
    known_object(data, path, SECRET_REF_FIELDS)
    for key in ("name", "key"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise SpecError(f"{path}.{key}", "is required (a non-empty string)")
    return SecretKeyRef(data["name"], data["key"])


def parse_gcs(data: Any, uid: str) -> GcsFaultTolerance | None:
    """The fault tolerance settings, or None when off; a SpecError names the field."""
    if data is None:
        return None
    known_object(data, PATH, FIELDS)
    address = data.get("redisAddress")
    if not address:
        for key in ("passwordSecret", "usernameSecret", "externalStorageNamespace"):
            if key in data:
                raise SpecError(PATH, f"{key} needs redisAddress")
        return None
    if not isinstance(address, str) or (why := address_problem(address)) is not None:
        raise SpecError(f"{PATH}.redisAddress", f"{'expected host:port' if not isinstance(address, str) else why}"
                                                f" (found {address!r})")
    namespace = data.get("externalStorageNamespace")
    if namespace is None:
        namespace = uid or "default"  # a file rendered without a uid: the real object has one
    if not isinstance(namespace, str) or (why := namespace_problem(namespace)) is not None:
        raise SpecError(f"{PATH}.externalStorageNamespace", f"{why or 'expected a string'} (found {namespace!r})")
    return GcsFaultTolerance(address, namespace, _secret_ref(data.get("passwordSecret"), f"{PATH}.passwordSecret"),
                             _secret_ref(data.get("usernameSecret"), f"{PATH}.usernameSecret"))
