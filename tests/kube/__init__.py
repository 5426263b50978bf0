"""A Kubernetes API emulator for integration tests, built on kmock (see README.md)."""
from .emulator import RAYCLUSTERS, ApiEmulator, Write, load_rayguard_crd, rayguard_emulator
from .harness import EmulatorServer, KubeApi, api_client, kopf_registry, run_kopf, wait_for, \
    write_kubeconfig

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
