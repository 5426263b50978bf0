"""rayguard's worker hook (rayguard_node/profiling/hook.py): `rayguard-node run` puts this
directory first on the PYTHONPATH of `ray start` when the group profiles, and Python's `site`
module runs it at the start of every interpreter that inherits that environment.

In a Ray worker (`default_worker.py`) it starts the thread that records a memray profile once
the worker runs a matching task or actor (`profiling/worker.py`); in every process, worker or
not, it then passes on to the next `sitecustomize` on `sys.path` (a user's or the
distribution's), which it would otherwise shadow. An error never stops the interpreter: it is
printed on stderr, which for a worker is its log file under Ray's logs.
"""

import os
import sys


def _rayguard_profile() -> None:
    if not os.environ.get("_RAYGUARD_MEMRAY_DIR"):  # hook.DIR_ENV: the runtime asked for profiles
        return
    from rayguard_node.profiling.hook import is_ray_worker

    if is_ray_worker(sys.argv):
        from rayguard_node.profiling.worker import start

        start()


def _next_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


try:
    _rayguard_profile()
except Exception as error:  # noqa: BLE001 (the worker must start whatever happens here)
    print(f"rayguard: memray profiling not started: {type(error).__name__}: {error}", file=sys.stderr)
try:
    _next_sitecustomize()
except Exception as error:  # noqa: BLE001
    print(f"rayguard: the next sitecustomize failed: {type(error).__name__}: {error}", file=sys.stderr)
