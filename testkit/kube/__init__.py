"""A Kubernetes API emulator for integration tests and benchmarks, built on kmock (see
testkit/README.md)."""
from .emulator import ApiEmulator, Write, rayguard_emulator
from .harness import EmulatorServer, KubeApi, api_client, kopf_registry, run_kopf, wait_for, \
    write_kubeconfig
from .store import RAYCLUSTERS, load_rayguard_crd

__all__ = [
    'RAYCLUSTERS',
    'ApiEmulator',
    'EmulatorServer',
    'KubeApi',
    'Write',
    'api_client',
    'kopf_registry',
    'load_rayguard_crd',
    'rayguard_emulator',
    'run_kopf',
    'wait_for',
    'write_kubeconfig',
]
