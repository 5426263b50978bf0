"""A Kubernetes API emulator for integration tests and benchmarks, built on kmock (see
testkit/README.md)."""
from .chart import CHART_MODES, ChartMode, find_tool, helm_lint, helm_template
from .emulator import ApiEmulator, Write, rayguard_emulator
from .harness import EmulatorServer, KubeApi, api_client, kopf_registry, run_kopf, wait_for, \
    write_kubeconfig
from .rbac import ADMIN_TOKEN, Authorizer, Policy, forbidden_status, request_attributes
from .store import RAYCLUSTERS, load_rayguard_crd

__all__ = [
    'ADMIN_TOKEN',
    'CHART_MODES',
    'RAYCLUSTERS',
    'ApiEmulator',
    'Authorizer',
    'ChartMode',
    'EmulatorServer',
    'KubeApi',
    'Policy',
    'Write',
    'api_client',
    'find_tool',
    'forbidden_status',
    'helm_lint',
    'helm_template',
    'kopf_registry',
    'load_rayguard_crd',
    'rayguard_emulator',
    'request_attributes',
    'run_kopf',
    'wait_for',
    'write_kubeconfig',
]
