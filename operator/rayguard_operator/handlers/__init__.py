"""The kopf layer: importing this package registers every handler, each module once.

`kopf run -m rayguard_operator.handlers` (what `rayguard operator` runs) imports it. The
modules are thin: they name a cluster and hand it to the reconciler or the OOM tracker.
"""

from rayguard_operator.handlers import startup, cluster, oom, gcs  # noqa: F401  (registration order)
