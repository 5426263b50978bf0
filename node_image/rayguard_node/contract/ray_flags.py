"""The `ray start` flags rayguard sets itself. rayStartParams (`RAYGUARD_RAY_START_PARAMS`)
may not set them: the operator refuses such a spec and the runtime such a setting."""

from __future__ import annotations

# Sized by the memory plan (rayguard_node.sizing.plan).
PLAN_FLAGS = frozenset({"num-cpus", "memory", "object-store-memory"})
# Set by the supervisor from the pod's role and paths (rayguard_node.run.ray_command).
SUPERVISOR_FLAGS = frozenset({"head", "address", "block", "temp-dir"})
OWNED_FLAGS = PLAN_FLAGS | SUPERVISOR_FLAGS
