"""GCS fault tolerance on an external Redis: what Ray 2.60 reads, and where rayguard's keys go.

Pinned from Ray 2.60's own code (README, "GCS fault tolerance"):

- `RAY_REDIS_ADDRESS`: `ray/_private/node.py`, `Node.__init__` ("Set up external Redis when
  `RAY_REDIS_ADDRESS` is specified"); `ray start --address` for it is deprecated in
  `ray/scripts/scripts.py` in favour of this variable.
- The password and the ACL user: `ray start --redis-password` and `--redis-username` (hidden
  options in `ray/scripts/scripts.py`; `ray/_private/services.py` hands them to `gcs_server` as
  `--redis_password` / `--redis_username`). Ray reads no environment variable for either.
- `RAY_external_storage_namespace`: the RayConfig entry `external_storage_namespace`, read from
  the environment by `gcs_server` (the name is in Ray 2.60's `gcs_server` binary, with the
  check that the namespace holds no `@`).
- Ray's keys: every table of the GCS is one hash `RAY<namespace>@<table>`;
  `ray/_private/gcs_utils.py` `cleanup_redis_storage` "deletes all keys with prefix
  `RAY{key_prefix}@`".

rayguard puts its own keys (the reports stream and its sent markers, the ledger) under the
same prefix, so that one namespace is one cluster's data, Ray's and rayguard's, and removing
the prefix removes the cluster and nothing else.
"""

from __future__ import annotations

RAY_REDIS_ADDRESS_ENV = "RAY_REDIS_ADDRESS"
RAY_STORAGE_NAMESPACE_ENV = "RAY_external_storage_namespace"
REDIS_PASSWORD_FLAG = "--redis-password"
REDIS_USERNAME_FLAG = "--redis-username"
CLUSTER_SEPARATOR = "@"  # Ray's kClusterSeparator: it ends the namespace in every key
MAX_NAMESPACE_CHARS = 253
_GLOB_SPECIAL = "\\*?[]"


def key_prefix(namespace: str) -> str:
    """Every key of one cluster in the external Redis starts with this (Ray's and rayguard's)."""
    return f"RAY{namespace}{CLUSTER_SEPARATOR}"


def match_pattern(namespace: str) -> str:
    """A SCAN MATCH pattern for exactly the namespace's keys (glob characters escaped)."""
    escaped = "".join("\\" + c if c in _GLOB_SPECIAL else c for c in key_prefix(namespace))
    return escaped + "*"


def namespace_problem(namespace: str) -> str | None:
    """Why Ray would refuse (or misread) this namespace; None when it is fine."""
    if not namespace:
        return "must not be empty"
    if len(namespace) > MAX_NAMESPACE_CHARS:
        return f"at most {MAX_NAMESPACE_CHARS} characters"
    if CLUSTER_SEPARATOR in namespace:
        return f"must not contain {CLUSTER_SEPARATOR!r} (Ray's separator between namespace and table)"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in namespace):
        return "spaces and control characters are not allowed"
    return None


def address_problem(address: str) -> str | None:
    """Why `host:port` is not one; None when it is."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "expected host:port, e.g. redis.example.svc:6379"
    if any(c.isspace() or c in ",/@" for c in address):
        return "one host:port (no spaces, commas, slashes or credentials)"
    return None
