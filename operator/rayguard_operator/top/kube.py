"""`rayguard top CLUSTER`: the head's Redis, through the Kubernetes API alone (no `kubectl`).

1. The head pod: the Running pod labelled `rayguard.dev/cluster=<name>` and
   `rayguard.dev/node-type=head` (the newest, if a replacement overlaps its predecessor).
2. The Redis password: key `redis-password` of the cluster's Secret (`<name>-secret`).
3. A port-forward to the head's Redis port (`names.PORT_REDIS`), made with the client's
   `kubernetes.stream.portforward` for each connection, behind a local `TcpBridge` port.

Reads go through `kube.api.KubeApi` (its errors name the object and the server's reason); the
port-forward is the one call made here, on the same client. It needs `get` on pods, secrets
and (for a clearer error) rayclusters, and `create` on `pods/portforward`.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import kubernetes.config
import urllib3
from kubernetes.stream import portforward

from rayguard_operator import names
from rayguard_operator.errors import KubeApiError
from rayguard_operator.kube.api import KubeApi
from rayguard_operator.top.bridge import SocketLike, TcpBridge
from rayguard_operator.top.reader import TopError

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_namespace(kubeconfig: str | None = None, service_account: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """In a pod: its own namespace. Elsewhere: the current kubeconfig context's, or `default`."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and service_account.is_file():
        return service_account.read_text().strip() or "default"
    try:
        _contexts, current = kubernetes.config.list_kube_config_contexts(
            config_file=kubeconfig or os.environ.get("KUBECONFIG") or None)
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    return str(((current or {}).get("context") or {}).get("namespace") or "default")


def _running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")


def find_head_pod(api: KubeApi, namespace: str, cluster: str) -> str:
    """The name of the cluster's running head pod, or a `TopError` that says what is missing."""
    selector = f"{names.LABEL_CLUSTER}={cluster},{names.LABEL_NODE_TYPE}={names.HEAD}"
    pods = api.list_pods(namespace, selector)
    running = [pod for pod in pods if _running(pod)]
    if running:
        newest = max(running, key=lambda pod: (pod["metadata"].get("creationTimestamp") or "",
                                               pod["metadata"]["name"]))
        return str(newest["metadata"]["name"])
    if pods:
        states = ", ".join(f"{pod['metadata']['name']} {(pod.get('status') or {}).get('phase') or 'Pending'}"
                           for pod in pods)
        raise TopError(f"the head pod of RayCluster {namespace}/{cluster} is not running ({states});"
                       " its Redis is not up yet")
    if api.get_cluster(namespace, cluster) is None:
        raise TopError(f"no RayCluster {cluster!r} in namespace {namespace!r}"
                       " (another namespace? use -n NAMESPACE)")
    raise TopError(f"RayCluster {namespace}/{cluster} has no head pod yet (is the operator running?)")


def redis_password(api: KubeApi, namespace: str, cluster: str) -> str:
    name = names.secret_name(cluster)
    secret = api.get_secret(namespace, name)
    if secret is None:
        raise TopError(f"no Secret {namespace}/{name}, which holds the cluster's Redis password"
                       " (the operator creates it with the cluster)")
    encoded = (secret.get("data") or {}).get(names.SECRET_KEY_REDIS_PASSWORD)
    if not encoded:
        raise TopError(f"Secret {namespace}/{name} has no key {names.SECRET_KEY_REDIS_PASSWORD!r}")
    try:
        password = base64.b64decode(encoded, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        raise TopError(f"Secret {namespace}/{name}: key {names.SECRET_KEY_REDIS_PASSWORD!r}"
                       " is not base64 of UTF-8 text") from None
    if not password:
        raise TopError(f"Secret {namespace}/{name}: key {names.SECRET_KEY_REDIS_PASSWORD!r} is empty")
    return password


def port_forwarder(api: KubeApi, namespace: str, pod: str, port: int) -> Callable[[], SocketLike]:
    """A function that opens one port-forward to `pod`:`port` and returns its socket."""
    lock = threading.Lock()  # `portforward` swaps the client's request method while it connects

    def connect() -> SocketLike:
        with lock:
            forward = portforward(api.core.connect_get_namespaced_pod_portforward, pod, namespace,
                                  ports=str(port))
        sock = forward.socket(port)
        sock.setblocking(True)
        return sock  # type: ignore[no-any-return]

    return connect


@dataclass
class KubeRedis:
    """The head's Redis of one cluster at 127.0.0.1:`bridge.port`; `close` when done."""

    api: KubeApi
    bridge: TcpBridge
    namespace: str
    pod: str
    password: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.bridge.port}/0"

    @property
    def where(self) -> str:
        return f"pod {self.namespace}/{self.pod} port {names.PORT_REDIS[1]} (port-forward)"

    def close(self) -> None:
        self.bridge.close()
        self.api.close()


def open_kube_redis(cluster: str, namespace: str | None) -> KubeRedis:
    """Find the head, read the password, start the bridge. Errors are `TopError`s."""
    try:
        api = KubeApi.from_environment()
    except (kubernetes.config.ConfigException, OSError) as error:
        raise TopError(f"no Kubernetes configuration ({error}); or use --redis-url") from None
    namespace = namespace or default_namespace()
    try:
        pod = find_head_pod(api, namespace, cluster)
        password = redis_password(api, namespace, cluster)
    except KubeApiError as error:
        api.close()
        raise TopError(str(error)) from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        api.close()
        why = getattr(error, "reason", None) or error  # urllib3's retry error wraps the cause
        raise TopError(f"cannot reach the Kubernetes API at {api.api_client.configuration.host}: {why}") from None
    except TopError:
        api.close()
        raise
    bridge = TcpBridge(port_forwarder(api, namespace, pod, names.PORT_REDIS[1]))
    bridge.start()
    return KubeRedis(api, bridge, namespace, pod, password)
