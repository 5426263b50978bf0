"""Which part of the operator makes an API request, named in the request's User-Agent.

`KubeApi` adds `rayguard-operator` to the client's User-Agent, and inside `calling_as(part)`
`rayguard-operator/<part>`.
Reconcile passes run as `reconcile` (triggered by an event; they read the cache) or `resync`
(the timer's full read of the API), and the OOM report followers as `oom`, so that an API
server's audit log, the benchmarks and the tests can tell those reads from each other.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

USER_AGENT = "rayguard-operator"
RECONCILE, RESYNC, OOM = "reconcile", "resync", "oom"

_part: ContextVar[str] = ContextVar("rayguard_operator_caller", default="")


@contextmanager
def calling_as(part: str) -> Iterator[None]:
    token = _part.set(part)
    try:
        yield
    finally:
        _part.reset(token)


def user_agent() -> str:
    part = _part.get()
    return f"{USER_AGENT}/{part}" if part else USER_AGENT
