"""Glue between the emulator and the tests: serving it in a background thread, a kubeconfig
for it, a synchronous client, polling, and running kopf against it.

Synchronous tests, the kubernetes client and kopf's ``KopfRunner`` (kopf in its own thread and
event loop) all reach the emulator over plain HTTP on 127.0.0.1, so nothing is patched.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import importlib
import pathlib
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import aiohttp.web
import kopf
import kubernetes.client
import yaml
from kopf.testing import KopfRunner

from .emulator import ApiEmulator

T = TypeVar('T')


class EmulatorServer:
    """Serve an emulator on 127.0.0.1 from a thread with its own event loop, so synchronous
    tests and KopfRunner (kopf in yet another thread and loop) reach it over HTTP alike.

    aiohttp's server is used directly: kmock's `Server` also re-routes aiohttp's DNS
    resolution process-wide, which would patch kopf's client.
    """

    def __init__(self, emulator: ApiEmulator, host: str = '127.0.0.1', port: int = 0) -> None:
        self.emulator, self.host, self.port = emulator, host, port
        self._thread = threading.Thread(target=self._run, name='kube-emulator', daemon=True)
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f'http://{self.host}:{self.port}'

    def __enter__(self) -> EmulatorServer:
        self._thread.start()
        if not self._ready.wait(timeout=10) or self._failure is not None:
            raise RuntimeError('the API emulator did not start') from self._failure
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)

    def call(self, fn: Callable[[], T], timeout: float = 10) -> T:
        """Run `fn` in the server's loop: the safe way to read or change `emulator.objects`."""
        async def run() -> T:
            async with self.emulator._lock:
                return fn()
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported by __enter__ if it happens at start
            self._failure = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        server = aiohttp.web.Server(self.emulator, handler_cancellation=True, access_log=None)
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        async with self.emulator:
            await runner.setup()
            try:
                site = aiohttp.web.TCPSite(runner, self.host, self.port)
                await site.start()
                self.port = runner.addresses[0][1]
                self._ready.set()
                await self._stopping.wait()
            finally:
                await runner.cleanup()


def write_kubeconfig(path: pathlib.Path, url: str, namespace: str = 'default',
                     token: str | None = None) -> pathlib.Path:
    """Plain HTTP, with a bearer token or no credentials, which `kopf.login_with_kubeconfig`
    and the kubernetes client's `new_client_from_config(path)` both accept. With RBAC on
    (`ApiEmulator.authorizer`), the token says who the client is."""
    path.write_text(yaml.safe_dump({
        'apiVersion': 'v1', 'kind': 'Config', 'current-context': 'emulator',
        'clusters': [{'name': 'emulator', 'cluster': {'server': url}}],
        'users': [{'name': 'emulator', 'user': {'token': token} if token else {}}],
        'contexts': [{'name': 'emulator', 'context': {
            'cluster': 'emulator', 'user': 'emulator', 'namespace': namespace}}],
    }))
    return path


@dataclasses.dataclass
class KubeApi:
    """What a test needs to reach the emulator: its URL, a kubeconfig, and a sync client."""
    url: str
    kubeconfig_path: pathlib.Path
    emulator: ApiEmulator
    server: EmulatorServer
    client: kubernetes.client.ApiClient

    @functools.cached_property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.client)

    @functools.cached_property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.client)

    @functools.cached_property
    def events(self) -> kubernetes.client.EventsV1Api:
        return kubernetes.client.EventsV1Api(self.client)

    def token_for(self, namespace: str, name: str) -> str:
        """A bearer token for ServiceAccount `namespace/name` (created through the API first), as
        the kubelet mounts one in a pod: with RBAC on, its requests are authorized as
        `system:serviceaccount:<namespace>:<name>` by the Roles bound to it."""
        return self.server.call(lambda: self.emulator.issue_token(namespace, name))


def api_client(url: str, token: str | None = None) -> kubernetes.client.ApiClient:
    """A sync client bound to `url`; with `token`, it sends it as a bearer token."""
    configuration = kubernetes.client.Configuration(host=url)
    if token:
        configuration.api_key = {'authorization': f'Bearer {token}'}
    return kubernetes.client.ApiClient(configuration)


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
             what: str = 'the condition', ignore: Iterable[type[BaseException]] = ()) -> T:
    """Poll until `predicate()` is truthy and return its value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    ignored = tuple(ignore)
    while True:
        try:
            result = predicate()
        except ignored:
            result = None  # type: ignore[assignment]
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f'timed out after {timeout}s waiting for {what}')
        time.sleep(interval)


def kopf_registry() -> kopf.OperatorRegistry:
    """A fresh registry that logs in from $KUBECONFIG. A bare `kopf.OperatorRegistry()` has no
    login handler at all (only kopf's own default registry gets them), so kopf would fail
    with "Ran out of valid credentials"."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
    return registry


@contextlib.contextmanager
def run_kopf(args: Sequence[str], timeout: float = 30,
             settings: kopf.OperatorSettings | None = None) -> Iterator[KopfRunner]:
    """`KopfRunner(args)` with a fresh registry, so each test sees only its own handlers.

    Modules given with `-m` that are already imported, and their submodules, are reloaded into
    the new registry: kopf imports them with `importlib.import_module`, which runs their
    decorators only once per process. Files given by path are executed afresh by kopf itself. The previous default
    registry is restored afterwards. `timeout` bounds how long stopping kopf may take.
    """
    previous = kopf.get_default_registry()
    registry = kopf_registry()
    kopf.set_default_registry(registry)
    try:
        modules = [value for flag, value in zip(args, args[1:]) if flag in {'-m', '--module'}]
        for name in modules:
            # A package's handler modules too, in the order they were first imported.
            loaded = [m for m in list(sys.modules) if m == name or m.startswith(f'{name}.')]
            for module in loaded:
                importlib.reload(sys.modules[module])
        with KopfRunner(list(args), timeout=timeout, registry=registry,
                        settings=settings) as runner:
            yield runner
    finally:
        kopf.set_default_registry(previous)
