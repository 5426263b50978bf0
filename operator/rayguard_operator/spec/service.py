"""spec.head.service: the head Service's type, annotations, labels, extra ports and headless
mode. `manifests/service.py` builds the Service from it; rayguard applies it with server-side
apply, so the fields listed here are the ones rayguard owns (README, "Head Service")."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from rayguard_operator import names
from rayguard_operator.errors import SpecError
from rayguard_operator.spec.fields import known_object, one_of

CLUSTER_IP, NODE_PORT, LOAD_BALANCER = "ClusterIP", "NodePort", "LoadBalancer"
SERVICE_TYPES = (CLUSTER_IP, NODE_PORT, LOAD_BALANCER)
PROTOCOLS = ("TCP", "UDP", "SCTP")
SERVICE_FIELDS = {"type", "annotations", "labels", "ports", "headless"}
PORT_FIELDS = {"name", "port", "targetPort", "protocol"}
MAX_EXTRA_PORTS = 16
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # a DNS label, as Service port names are
_TARGET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # an IANA service name: a container port's name
# Label and annotation keys that are rayguard's: the reserved prefix and app.kubernetes.io/managed-by.
RESERVED_KEYS = (names.RESERVED_PREFIX, names.LABEL_MANAGED_BY)


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int | str
    protocol: str = "TCP"


@dataclass(frozen=True)
class HeadServiceSpec:
    type: str = CLUSTER_IP
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[ServicePort, ...] = ()
    headless: bool = False  # clusterIP: None


def _strings(data: Any, path: str) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SpecError(path, f"expected an object, found {type(data).__name__}")
    for key, value in data.items():
        if not isinstance(value, str):
            raise SpecError(f"{path}.{key}", f"expected a string, found {value!r}")
        if any(key == k or (k.endswith("/") and key.startswith(k)) for k in RESERVED_KEYS):
            raise SpecError(f"{path}.{key}", f"is rayguard's own (keys under {names.RESERVED_PREFIX} and"
                                             f" {names.LABEL_MANAGED_BY} are reserved)")
    return dict(data)


def _port_number(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise SpecError(path, f"expected a port number from 1 to 65535, found {value!r}")
    return value


def _port(data: Any, path: str) -> ServicePort:
    known_object(data, path, PORT_FIELDS)
    name = data.get("name")
    if not isinstance(name, str) or not _PORT_NAME.match(name) or len(name) > 63:
        raise SpecError(f"{path}.name", f"expected a DNS label (lower-case letters, digits, '-'), found {name!r}")
    if name in dict(names.HEAD_SERVICE_PORTS):
        raise SpecError(f"{path}.name", f"{name!r} is one of rayguard's own ports"
                                        f" ({', '.join(n for n, _ in names.HEAD_SERVICE_PORTS)}); choose another")
    port = _port_number(data.get("port"), f"{path}.port")
    target = data.get("targetPort", port)
    if isinstance(target, str):
        if not _TARGET_NAME.match(target) or len(target) > 15:
            raise SpecError(f"{path}.targetPort", f"expected a port number or a container port's name, found {target!r}")
    else:
        target = _port_number(target, f"{path}.targetPort")
    protocol = data.get("protocol", "TCP")
    one_of(protocol, f"{path}.protocol", PROTOCOLS)
    return ServicePort(name, port, target, protocol)


def parse_head_service(data: Any, path: str = "spec.head.service") -> HeadServiceSpec:
    """The head Service's settings, or a SpecError naming the field that cannot work."""
    if data is None:
        return HeadServiceSpec()
    known_object(data, path, SERVICE_FIELDS)
    kind = data.get("type", CLUSTER_IP)
    one_of(kind, f"{path}.type", SERVICE_TYPES)
    headless = data.get("headless", False)
    if not isinstance(headless, bool):
        raise SpecError(f"{path}.headless", f"expected true or false, found {headless!r}")
    if headless and kind != CLUSTER_IP:
        raise SpecError(f"{path}.headless", f"needs type ClusterIP (a headless Service has no cluster IP), found {kind}")
    raw_ports = data.get("ports") or []
    if not isinstance(raw_ports, list):
        raise SpecError(f"{path}.ports", "expected a list")
    if len(raw_ports) > MAX_EXTRA_PORTS:
        raise SpecError(f"{path}.ports", f"at most {MAX_EXTRA_PORTS} extra ports, found {len(raw_ports)}")
    ports: list[ServicePort] = []
    taken = {(number, "TCP"): name for name, number in names.HEAD_SERVICE_PORTS}
    for i, raw in enumerate(raw_ports):
        port = _port(raw, f"{path}.ports[{i}]")
        if any(p.name == port.name for p in ports):
            raise SpecError(f"{path}.ports[{i}].name", f"duplicate port name {port.name!r}")
        if (port.port, port.protocol) in taken:
            raise SpecError(f"{path}.ports[{i}].port", f"{port.port}/{port.protocol} is already the"
                                                        f" {taken[(port.port, port.protocol)]!r} port")
        taken[(port.port, port.protocol)] = port.name
        ports.append(port)
    return HeadServiceSpec(type=kind, annotations=_strings(data.get("annotations"), f"{path}.annotations"),
                           labels=_strings(data.get("labels"), f"{path}.labels"), ports=tuple(ports),
                           headless=headless)
