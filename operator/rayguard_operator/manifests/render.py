"""`rayguard render`: exactly what the operator would create for a RayCluster file.

The file is first checked as the API server would check it on `kubectl apply`: against the
CRD's own OpenAPI schema, with its defaults, and its CEL rules (`spec.crd_schema`), so that
render refuses what the server refuses. It is then parsed by the operator's own model (which
applies the CRD's defaults and refuses what the CRD cannot) and built by its own builders,
with two placeholders: the Secret's values (`<generated>`) and what only exists once the
cluster does (the RayCluster's uid, and each pod's random name suffix). No cluster and no
kopf are needed. `rayguard local up` loads its file the same way (`load_cluster`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from rayguard_operator import names
from rayguard_operator.manifests.children import build_children
from rayguard_node.errors import RayguardError
from rayguard_operator.errors import SpecError
from rayguard_operator.spec.crd_schema import check_against_crd
from rayguard_operator.spec.model import ClusterModel, NodeGroup, parse_cluster
from rayguard_operator.settings import OperatorSettings

UID_PLACEHOLDER = "<uid of the RayCluster>"
SUFFIX_PLACEHOLDER = "<random>"


class RenderError(RayguardError):
    """The file cannot be rendered; str() is one line naming the file and the field."""


def _pod_name(cluster: ClusterModel, group: NodeGroup, _index: int) -> str:
    prefix = names.head_pod_prefix(cluster.name) if group.role == names.HEAD \
        else names.worker_pod_prefix(cluster.name, group.name)
    return prefix + SUFFIX_PLACEHOLDER


# The API server takes requests of at most 3 MiB; a RayCluster is a few KiB.
MAX_FILE_BYTES = 3 * 1024 * 1024
# Nodes of the parsed document, aliases expanded: far above any real RayCluster, far below what
# an alias bomb ("billion laughs") would expand to.
MAX_NODES = 200_000
MAX_DEPTH = 64


def _read(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise RenderError(f"{path}: cannot read ({error.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise RenderError(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, more than the API server accepts")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RenderError(f"{path}: not UTF-8 text (byte {error.start})") from None


def _check_size(path: Path, document: Any) -> None:
    """Refuse a document with too many nodes or too deep, counting aliases as often as used."""
    seen, stack = 0, [(document, 0)]
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES or depth > MAX_DEPTH:
            raise RenderError(f"{path}: the document is too large or too deeply nested"
                              f" (at most {MAX_NODES} values, {MAX_DEPTH} levels)")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            stack.extend((k, depth + 1) for k in node)
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def load_cluster(path: Path) -> dict[str, Any]:
    """The one RayCluster in the file, as written, once the API server would accept it."""
    text = _read(path)
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise RenderError(f"{path}: not YAML ({str(error).splitlines()[0]})") from None
    except RecursionError:
        raise RenderError(f"{path}: the document is nested too deeply") from None
    for document in documents:
        _check_size(path, document)
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise RenderError(f"{path}: expected exactly one RayCluster document, found {len(documents)}")
    body = documents[0]
    if body.get("apiVersion") != names.API_VERSION or body.get("kind") != names.KIND:
        raise RenderError(f"{path}: apiVersion/kind: expected {names.API_VERSION} {names.KIND},"
                          f" found {body.get('apiVersion')} {body.get('kind')}")
    try:
        check_against_crd(body)
    except SpecError as error:
        raise RenderError(f"{path}: {error}") from None
    return body


def model_of(path: Path, body: dict[str, Any], settings: OperatorSettings) -> ClusterModel:
    """The operator's model of a loaded file; its refusal names the file and the field."""
    try:
        return parse_cluster(body, settings)
    except SpecError as error:
        raise RenderError(f"{path}: {error}") from None


def render_list(body: dict[str, Any], settings: OperatorSettings, path: Path | None = None) -> dict[str, Any]:
    """A v1 List of the Secret, the head Service, with autoscaling the autoscaler's
    ServiceAccount, Role, RoleBinding and ConfigMap, the head Pod and the worker Pods (none
    while suspended). With `path`, a refused spec is a `RenderError` naming the file."""
    model = model_of(path, body, settings) if path is not None else parse_cluster(body, settings)
    cluster = dataclasses.replace(model, uid=UID_PLACEHOLDER)
    items = build_children(cluster, lambda g, i: _pod_name(cluster, g, i),
                           names.SECRET_PLACEHOLDER, names.SECRET_PLACEHOLDER)
    return {"apiVersion": "v1", "kind": "List", "items": items}


def render_file(path: Path, output: str, settings: OperatorSettings) -> str:
    rendered = render_list(load_cluster(path), settings, path)
    if output == "json":
        return json.dumps(rendered, indent=2) + "\n"
    return yaml.safe_dump(rendered, sort_keys=False, default_flow_style=False)
