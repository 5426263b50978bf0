"""Fixtures for integration tests."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube import EmulatorServer, KubeApi, api_client, rayguard_emulator, write_kubeconfig


# --- Kubernetes API emulator (tests/kube; see tests/kube/README.md) ----------------------------

@pytest.fixture
def kube_server() -> Iterator[EmulatorServer]:
    """An API emulator with rayguard's CRD, served over HTTP on 127.0.0.1 and a free port."""
    with EmulatorServer(rayguard_emulator()) as server:
        yield server


@pytest.fixture
def kube_api(kube_server: EmulatorServer, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeApi]:
    """The emulator, a kubeconfig for it in $KUBECONFIG (read by `run_kopf`'s login and by
    code that reads the variable at run time), and a sync kubernetes client bound to it."""
    kubeconfig = write_kubeconfig(tmp_path / 'kubeconfig', kube_server.url)
    monkeypatch.setenv('KUBECONFIG', str(kubeconfig))
    client = api_client(kube_server.url)
    try:
        yield KubeApi(url=kube_server.url, kubeconfig_path=kubeconfig,
                      emulator=kube_server.emulator, server=kube_server, client=client)
    finally:
        client.close()

# --- end of the Kubernetes API emulator fixtures -----------------------------------------------
