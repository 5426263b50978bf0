"""rayguard's kopf operator: RayCluster resources into a Secret, a head Service and Ray pods.

`kopf run -m rayguard_operator` registers the handlers: kopf is imported before it imports
this package, and that is when `handlers` is loaded. Anything else (`rayguard render`, the
builders, tests) imports only what it uses, and never pulls in kopf.
"""

import importlib as _importlib
import sys as _sys

if "kopf" in _sys.modules:
    if f"{__name__}.handlers" in _sys.modules:
        # This package was re-executed (importlib.reload): register the handlers again, into
        # whatever registry kopf now uses by default.
        _importlib.reload(_sys.modules[f"{__name__}.handlers"])
    else:
        from . import handlers  # noqa: F401
