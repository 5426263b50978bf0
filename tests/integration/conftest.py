"""Fixtures for integration tests."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.kube import ADMIN_TOKEN, EmulatorServer, KubeApi, api_client, rayguard_emulator, write_kubeconfig


# Operators started by tests serve no /metrics unless a test asks for it (a fixed port would
# clash between operators); tests/integration/test_operator_metrics.py asks for a free one.
os.environ.setdefault("RAYGUARD_OPERATOR_METRICS_PORT", "0")


# --- Kubernetes API emulator (testkit/kube; see testkit/README.md) ---------------------------

@pytest.fixture
def kube_server() -> Iterator[EmulatorServer]:
    """An API emulator with rayguard's CRD, served over HTTP on 127.0.0.1 and a free port."""
    with EmulatorServer(rayguard_emulator()) as server:
        yield server


@pytest.fixture
def kube_api(kube_server: EmulatorServer, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeApi]:
    """The emulator, a kubeconfig for it in $KUBECONFIG (read by `run_kopf`'s login and by
    code that reads the variable at run time), and a sync kubernetes client bound to it. Both
    carry the admin token: with RBAC on (the operator fixtures), the test is not restricted."""
    kubeconfig = write_kubeconfig(tmp_path / 'kubeconfig', kube_server.url, token=ADMIN_TOKEN)
    monkeypatch.setenv('KUBECONFIG', str(kubeconfig))
    client = api_client(kube_server.url, token=ADMIN_TOKEN)
    try:
        yield KubeApi(url=kube_server.url, kubeconfig_path=kubeconfig,
                      emulator=kube_server.emulator, server=kube_server, client=client)
    finally:
        client.close()

# --- end of the Kubernetes API emulator fixtures -----------------------------------------------


# --- rayguard operator under kopf (tests/integration/test_operator_*.py) -----------------------
# The emulator has no kubelet: pods stay Pending until a test patches their status, which is
# how these tests drive readiness (`set_ready`) and failures (`set_phase`).
#
# The operator runs as the chart's ServiceAccount, with exactly the RBAC that a real `helm
# template` renders from charts/rayguard (rendered once per session), in each of the chart's
# two modes: every test that uses `operator` or `oom_operator` runs twice (ids `cluster` and
# `namespaced`). Cluster mode runs kopf on every namespace under the ClusterRole; namespaced
# mode on `default` under a Role there (and the read-only observer ClusterRole), with the
# arguments `rayguard operator` builds from the Deployment's env. Any request the rules refuse
# fails the test at teardown: the rules must cover all the operator does. The second mode adds
# about three and a half minutes to the suite on 2 cores (test_oom_stream.py included), which
# keeps it well under 20 minutes, so every operator test runs in both.

import json as _json
import re as _re
import time as _time
from collections.abc import Callable as _Callable
from typing import Any as _Any

from kubernetes.client.exceptions import ApiException as _ApiException

from rayguard_operator.cli import kopf_run_args as _kopf_run_args
from rayguard_operator.settings import ENV_LOG_FORMAT as _ENV_LOG_FORMAT
from rayguard_operator.settings import ENV_NAMESPACES as _ENV_NAMESPACES
from rayguard_operator.settings import OperatorSettings as _OperatorSettings
from testkit.kube import CHART_MODES as _CHART_MODES
from testkit.kube import Authorizer as _Authorizer
from testkit.kube import ChartMode as _ChartMode
from testkit.kube import Policy as _Policy
from testkit.kube import run_kopf as _run_kopf
from testkit.kube import wait_for as _wait_for

_MERGE = 'application/merge-patch+json'
_CLUSTER_LABEL = 'rayguard.dev/cluster'


class OperatorHarness:
    """The operator running under kopf's KopfRunner against the emulator, and what tests need
    to look at and poke it. Reads go through the official client, never the operator's code."""

    ns = 'default'

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.runner: _Any = None

    # reading (plain dicts, as the API returns them)
    def _raw(self, call: _Callable[..., _Any], *args: _Any, **kwargs: _Any) -> _Any:
        return _json.loads(call(*args, _preload_content=False, **kwargs).data)

    def cluster(self, name: str) -> dict[str, _Any]:
        return self._raw(self.api.custom.get_namespaced_custom_object,
                         'rayguard.dev', 'v1', self.ns, 'rayclusters', name)

    def status(self, name: str) -> dict[str, _Any]:
        return self.cluster(name).get('status') or {}

    def condition(self, name: str, kind: str) -> dict[str, _Any]:
        return next((c for c in self.status(name).get('conditions', []) if c['type'] == kind), {})

    def pods(self, cluster: str, group: str | None = None) -> list[dict[str, _Any]]:
        selector = f'{_CLUSTER_LABEL}={cluster}' + (f',rayguard.dev/group={group}' if group else '')
        items = self._raw(self.api.core.list_namespaced_pod, self.ns, label_selector=selector)['items']
        return sorted(items, key=lambda p: p['metadata']['name'])

    def pod_names(self, cluster: str, group: str | None = None) -> set[str]:
        return {p['metadata']['name'] for p in self.pods(cluster, group)}

    def secret(self, name: str) -> dict[str, _Any]:
        return self._raw(self.api.core.read_namespaced_secret, name, self.ns)

    def secret_names(self) -> set[str]:
        return {s['metadata']['name'] for s in self._raw(self.api.core.list_namespaced_secret, self.ns)['items']}

    def service(self, name: str) -> dict[str, _Any]:
        return self._raw(self.api.core.read_namespaced_service, name, self.ns)

    def events(self, reason: str | None = None, cluster: str | None = None) -> list[dict[str, _Any]]:
        items = self._raw(self.api.core.list_namespaced_event, self.ns)['items']
        return [e for e in items if (reason is None or e.get('reason') == reason)
                and (cluster is None or e['involvedObject'].get('name') == cluster)]

    def reconciles(self, cluster: str) -> int:
        """Full passes the operator made over a cluster: the resync timer's, which read the
        cluster by name (event-driven passes read it from the watches' cache instead)."""
        path = _re.compile(rf'/rayclusters/{cluster}$')
        return sum(1 for r in list(self.api.emulator)
                   if r.method.value == 'GET' and path.search(r.url.path))

    # writing, as a user or a kubelet would. When requests race, the emulator can answer a
    # write it has applied with a 500 (two requests can get the same id in its request log);
    # a test's own writes are retried then, so tests exercise the operator, not that race.
    def _write(self, call: _Callable[..., _Any], *args: _Any, **kwargs: _Any) -> _Any:
        for attempt in range(5):
            try:
                return call(*args, **kwargs)
            except _ApiException as error:
                if attempt and error.status in (404, 409):
                    return None  # the 500 had been applied, and the operator acted on it already
                if error.status is None or error.status < 500 or attempt == 4:
                    raise
                _time.sleep(0.1)

    def create(self, body: dict[str, _Any]) -> dict[str, _Any]:
        self._write(self.api.custom.create_namespaced_custom_object,
                    'rayguard.dev', 'v1', self.ns, 'rayclusters', body)
        return self.cluster(body['metadata']['name'])

    def patch_spec(self, name: str, spec: dict[str, _Any]) -> None:
        self._write(self.api.custom.patch_namespaced_custom_object, 'rayguard.dev', 'v1', self.ns,
                    'rayclusters', name, {'spec': spec}, _content_type=_MERGE)

    def set_ready(self, pod: str, ready: bool = True) -> None:
        status = {'phase': 'Running', 'podIP': '10.0.0.1',
                  'conditions': [{'type': 'Ready', 'status': 'True' if ready else 'False'}]}
        self._write(self.api.core.patch_namespaced_pod_status, pod, self.ns, {'status': status},
                    _content_type=_MERGE)

    def set_phase(self, pod: str, phase: str) -> None:
        self._write(self.api.core.patch_namespaced_pod_status, pod, self.ns, {'status': {'phase': phase}},
                    _content_type=_MERGE)

    def delete_pod(self, pod: str) -> None:
        self._write(self.api.core.delete_namespaced_pod, pod, self.ns)

    def delete_cluster(self, name: str) -> None:
        self._write(self.api.custom.delete_namespaced_custom_object, 'rayguard.dev', 'v1', self.ns,
                    'rayclusters', name)

    # waiting
    def wait(self, predicate: _Callable[[], _Any], what: str, timeout: float = 60) -> _Any:
        return _wait_for(predicate, timeout=timeout, what=what)

    def wait_reconciles(self, cluster: str, passes: int = 2, timeout: float = 60) -> None:
        start = self.reconciles(cluster)
        self.wait(lambda: self.reconciles(cluster) >= start + passes, f'{passes} passes over {cluster}', timeout)

    def settle(self, cluster: str) -> None:
        """Until kopf has stored its own state and a resync pass has come and gone."""
        try:
            self.wait(lambda: 'rayguard.dev/last-handled-configuration'
                      in (self.cluster(cluster)['metadata'].get('annotations') or {}),
                      'kopf to finish handling', timeout=30)
        except AssertionError:
            # For a spec the handler rejected, kopf may not store its diff base on a busy
            # machine; the operator's own passes below are what the tests depend on.
            pass
        self.wait_reconciles(cluster, passes=2)


def operator_under_chart_rbac(api: KubeApi, mode: _ChartMode, directory: Path,
                              monkeypatch: pytest.MonkeyPatch, policy: _Policy | None = None) -> list[str]:
    """Turn on RBAC in the emulator with the chart's rules for `mode` (or `policy`, e.g. with
    a rule taken out), point $KUBECONFIG at a kubeconfig with the operator's ServiceAccount
    token, and return the `kopf run` arguments of the chart's Deployment (`--standalone`, and
    the namespaces from RAYGUARD_OPERATOR_NAMESPACES, as `rayguard operator` adds them)."""
    token = f'{mode.name}-operator-token'
    authorizer = _Authorizer(policy if policy is not None else mode.policy(), {token: mode.user()})
    api.server.call(lambda: setattr(api.emulator, 'authorizer', authorizer))
    kubeconfig = write_kubeconfig(directory / f'{mode.name}-operator-kubeconfig', api.url, token=token)
    monkeypatch.setenv('KUBECONFIG', str(kubeconfig))
    settings = _OperatorSettings.from_env({_ENV_NAMESPACES: mode.operator_env()[_ENV_NAMESPACES],
                                           _ENV_LOG_FORMAT: 'plain'})
    return _kopf_run_args(['--standalone'], settings)


def assert_rbac_was_enough(api: KubeApi, mode: _ChartMode) -> None:
    """The operator made its requests as the ServiceAccount, and none was refused."""
    refused = [f'{d.code} {d.attrs.verb} {d.attrs.path}: {d.status["message"]}' for d in api.emulator.refused()]
    assert refused == [], '\n'.join(refused)
    assert api.emulator.authorizer is not None and api.emulator.authorizer.served.get(mode.user(), 0) > 0


@pytest.fixture(params=sorted(_CHART_MODES))
def chart_mode(request: pytest.FixtureRequest) -> _ChartMode:
    """The chart's mode the operator runs under: `cluster` or `namespaced`."""
    return _CHART_MODES[request.param]


@pytest.fixture
def operator(kube_api: KubeApi, chart_mode: _ChartMode, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[OperatorHarness]:
    """`kopf run -m rayguard_operator.handlers` (as the issue asks) with a 0.5 s resync, as
    the chart's ServiceAccount under the chart's RBAC, in each mode."""
    monkeypatch.setenv('RAYGUARD_OPERATOR_RESYNC_SECONDS', '0.5')
    monkeypatch.setenv('RAYGUARD_OPERATOR_NODE_IMAGE', 'rayguard/node:test')
    harness = OperatorHarness(kube_api)
    args = operator_under_chart_rbac(kube_api, chart_mode, tmp_path, monkeypatch)
    with _run_kopf(args, timeout=30) as runner:
        harness.runner = runner
        yield harness
    assert runner.exception is None, runner.exception
    assert runner.exit_code == 0, runner.output
    assert_rbac_was_enough(kube_api, chart_mode)

# --- end of the rayguard operator fixtures -----------------------------------------------------
