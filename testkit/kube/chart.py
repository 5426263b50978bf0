"""The operator's Helm chart as a real `helm` renders it, for the chart tests and for running
the operator under the chart's RBAC in the emulator.

`helm` (and `kubectl`) are looked for in the running virtualenv's `bin/` and the repository's
`.venv/bin/` first (where `make deps` installs them: scripts/install-helm-kubectl.sh), then
on PATH: a test process need not have the venv on its PATH.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from .rbac import Policy, service_account_user

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / 'charts' / 'rayguard'
RELEASE = 'rg'
RELEASE_NAMESPACE = 'rayguard'
KUBE_VERSION = '1.35.0'  # the kubectl that `make deps` installs; kubernetes-validate has its schema


class ToolMissing(RuntimeError):
    pass


def find_tool(name: str) -> str | None:
    for directory in (Path(sys.prefix) / 'bin', REPO_ROOT / '.venv' / 'bin'):
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def tool(name: str) -> str:
    found = find_tool(name)
    if found is None:
        raise ToolMissing(f'{name} is not installed: `make deps` (or `make helm-kubectl`) puts helm v4 and '
                          f'kubectl v1.35 into .venv/bin')
    return found


def _run(args: list[str]) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


@functools.lru_cache(maxsize=None)
def _template(args: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    out = _run([tool('helm'), 'template', RELEASE, str(CHART), '--namespace', RELEASE_NAMESPACE,
                '--kube-version', KUBE_VERSION, *args])
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def helm_template(*args: str) -> list[dict[str, Any]]:
    """`helm template rg charts/rayguard --namespace rayguard ARGS...`, parsed; each distinct
    rendering runs helm once per process (the documents are copied for each caller)."""
    return copy.deepcopy(list(_template(tuple(args))))


def helm_lint(*args: str) -> str:
    return _run([tool('helm'), 'lint', str(CHART), *args])


@dataclasses.dataclass(frozen=True)
class ChartMode:
    """One way to install the chart, and what the operator gets from it."""
    name: str
    set_args: tuple[str, ...]

    def documents(self) -> list[dict[str, Any]]:
        return helm_template(*self.set_args)

    def policy(self) -> Policy:
        return Policy.from_documents(self.documents())

    def user(self) -> str:
        """The operator's identity: its ServiceAccount, as the Deployment runs it."""
        [deployment] = [d for d in self.documents() if d['kind'] == 'Deployment']
        account = deployment['spec']['template']['spec']['serviceAccountName']
        return service_account_user(deployment['metadata']['namespace'], account)

    def operator_env(self) -> dict[str, str]:
        """The operator container's literal env values."""
        [deployment] = [d for d in self.documents() if d['kind'] == 'Deployment']
        [container] = [c for c in deployment['spec']['template']['spec']['containers'] if c['name'] == 'operator']
        return {e['name']: e['value'] for e in container.get('env') or [] if 'value' in e}


# The two ways the README documents. Namespaced mode watches `default`, where the tests work.
CLUSTER_MODE = ChartMode('cluster', ())
NAMESPACED_MODE = ChartMode('namespaced', ('--set', 'namespaced=true', '--set', 'watchNamespaces={default}'))
CHART_MODES = {mode.name: mode for mode in (CLUSTER_MODE, NAMESPACED_MODE)}
