"""Every setting a pod gives its runtime, defined once: env name, flag, meaning, default.

This is the contract between the operator (which sets these variables in each pod it
builds, and in local mode) and `rayguard-node` (which reads them as flags or env vars).
`rayguard_node.run.options` pairs each setting with its parser; the operator's pod builder
names them from here; the README's configuration table is rendered from `SETTINGS` and a
test keeps the two equal. To add a setting, see docs/architecture.md ("Adding a setting").
"""

from __future__ import annotations

from dataclasses import dataclass

ENV_PREFIX = "RAYGUARD_"


@dataclass(frozen=True)
class Setting:
    key: str  # snake_case: the flag (`--key-with-dashes`) and the key in resolved values
    meaning: str
    default: str  # as the README states it
    env_override: str = ""  # only for the downward API's names (POD_NAME, ...)

    @property
    def env(self) -> str:
        return self.env_override or ENV_PREFIX + self.key.upper()

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def spellings(self) -> str:
        """How an error names it: both the flag and the env var."""
        return f"{self.flag} / {self.env}"


ROLE = Setting("role", "`head` or `worker`", "required")

# The memory plan's inputs (rayguard_node.sizing.plan.BudgetSettings and the node's facts).
LIMIT_BYTES = Setting("limit_bytes", "the memory limit to plan for (a quantity: `4Gi`)", "detected")
NUM_CPUS = Setting("num_cpus", "Ray `--num-cpus`", "0 on the head; the CPU limit on workers")
OBJECT_STORE_BYTES = Setting("object_store_bytes", "explicit object store size; wins over the fraction",
                             "from the fraction")
OBJECT_STORE_FRACTION = Setting("object_store_fraction", "object store share of the limit", "0.3")
OBJECT_STORE_MAX_BYTES = Setting("object_store_max_bytes", "object store cap", "20Gi")
REDIS_FRACTION = Setting("redis_fraction", "head Redis share of the limit", "0.3")
REDIS_MAX_BYTES = Setting("redis_max_bytes", "head Redis cap", "10Gi")
HEAP_FRACTION = Setting("heap_fraction", "share of the rest given to Ray as `--memory`", "0.5")
USAGE_THRESHOLD = Setting("usage_threshold", "Ray's memory monitor threshold", "0.95")
MONITOR_REFRESH_MS = Setting("monitor_refresh_ms", "Ray's memory monitor period, 0 disables", "250")
GUARD_REFRESH_MS = Setting("guard_refresh_ms", "rayguard's guard period, 0 disables", "50")
GUARD_MIN_REFRESH_MS = Setting("guard_min_refresh_ms",
                               "shortest guard period, while memory grows towards the threshold;"
                               " equal to the guard period: a fixed poll", "2")
GUARD_THRESHOLD = Setting("guard_threshold", "rayguard's guard threshold",
                          "0.95 when Ray is blind, 0.975 when Ray sees the limit")
SHM_BYTES = Setting("shm_bytes", "free bytes in `/dev/shm` to plan for", "measured")

# How the runtime runs: addresses, ports, files, identity, the ledger's flush policy.
HEAD_ADDRESS = Setting("head_address", "`host:port` of the head's GCS (workers)", "required on workers")
RAY_AUTH_TOKEN_FILE = Setting("ray_auth_token_file", "file holding the Ray auth token",
                              "head: generated into `<ray temp dir>/rayguard_auth_token`; workers: required")
REDIS_URL = Setting("redis_url", "external Redis (`redis://host:port/db`); the head then starts none", "unset")
REDIS_PORT = Setting("redis_port", "port of the head's own redis-server", "6380")
REDIS_PASSWORD_FILE = Setting("redis_password_file", "file holding the Redis password",
                              "head: generated alongside the token")
HEALTH_PORT = Setting("health_port", "port for `/healthz`, `/readyz` and `/metrics`", "8079")
RAY_TEMP_DIR = Setting("ray_temp_dir", "Ray's `--temp-dir`", "Ray's default (`/tmp/ray`)")
CLUSTER = Setting("cluster", "RayCluster name, copied into reports", "empty")
GROUP = Setting("group", "worker group name, copied into reports", "empty")
POD_NAME = Setting("pod_name", "pod name, copied into reports", "empty", env_override="POD_NAME")
POD_NAMESPACE = Setting("pod_namespace", "pod namespace, copied into reports", "empty",
                        env_override="POD_NAMESPACE")
GRACE_SECONDS = Setting("grace_seconds", "SIGTERM grace period", "25")
RAY_START_PARAMS = Setting(
    "ray_start_params",
    'JSON object of extra `ray start` flags: `{"dashboard-port": 8265}` → `--dashboard-port=8265`;'
    " booleans become `true`/`false`, `null` a bare flag", "`{}`")
NUM_GPUS = Setting("num_gpus", "Ray `--num-gpus`: the GPUs Ray schedules on this node",
                   "0 on the head; on workers Ray counts the GPUs it sees (the operator sets the"
                   " pod's `nvidia.com/gpu` or `amd.com/gpu` limit)")
RAY_RESOURCES = Setting("ray_resources", 'Ray `--resources`: custom resources, a JSON object of name → whole'
                        ' count (`{"TPU": 4}`); merged with a `resources` in the start params', "`{}`")
QUOTA_ENFORCEMENT = Setting("quota_enforcement",
                            "actors over their `memory=` quota: `Kill`, `Warn` (report only) or `Off`",
                            "Kill")
QUOTA_TOLERANCE = Setting("quota_tolerance", "an actor is over its quota above quota × this (≥ 1)", "1.2")
QUOTA_GRACE_SECONDS = Setting("quota_grace_seconds", "how long an actor may stay over before it is acted on",
                              "5")
DASHBOARD_PORT = Setting("dashboard_port", "port of the head's Ray dashboard (its state API names actors"
                         " and their quotas)", "8265")
PROFILE = Setting("profile", "memray profiles of Ray workers (`true` or `false`)", "false")
PROFILE_MATCH = Setting("profile_match", "task and actor names that start a worker's memray recording:"
                        " comma-separated globs (`hog*,Trainer`); `Class` also matches `Class.method`",
                        "`*`")
PROFILE_MAX_BYTES = Setting("profile_max_bytes", "disk for the pod's memray files; one worker stops"
                            " recording at a quarter of it", "1Gi")
FLUSH_WHEN_AT_LEAST_BYTES = Setting("flush_when_at_least_bytes",
                                    "head: flush the ledger once Redis holds this much",
                                    "2Gi (at most 80% of `maxmemory`)")
FLUSH_PERIOD_SECS = Setting("flush_period_secs", "head: ledger flush period", "10")
FLUSH_NUM_ENTRIES_EACH_TIME = Setting("flush_num_entries_each_time", "head: ledger entries flushed each time",
                                      "10000")
# GCS fault tolerance on an external Redis (README, "GCS fault tolerance"): set in every pod of a
# cluster with spec.gcsFaultTolerance. The head starts Ray's GCS on it; every node writes its
# reports and ledger there, under the storage namespace's prefix, and the head starts no Redis.
GCS_REDIS_ADDRESS = Setting("gcs_redis_address", "`host:port` of the external Redis for Ray's GCS fault"
                            " tolerance (the head's `RAY_REDIS_ADDRESS`); reports and the ledger go there too,"
                            " and the head starts no redis-server", "unset: no fault tolerance")
GCS_REDIS_PASSWORD = Setting("gcs_redis_password", "the external Redis's password (the head's `ray start"
                             " --redis-password`); the operator sets it with `secretKeyRef`", "none")
GCS_REDIS_USERNAME = Setting("gcs_redis_username", "the external Redis's ACL user (the head's `ray start"
                             " --redis-username`); the operator sets it with `secretKeyRef`", "Redis's default user")
GCS_STORAGE_NAMESPACE = Setting("gcs_storage_namespace", "Ray's `RAY_external_storage_namespace`: the"
                                " cluster's keys in the external Redis all start with `RAY<namespace>@`",
                                "required with an external Redis; the operator sets the RayCluster's uid")
# Autoscaling (README, "The autoscaler sidecar"): set on the head of a cluster with
# spec.autoscaling.enabled, whose sidecar runs Ray's autoscaler, so Ray's own monitor must not.
EXTERNAL_AUTOSCALER = Setting("external_autoscaler", "head: the autoscaler sidecar runs Ray's autoscaler,"
                              " so `ray start` gets `--no-monitor` (`true` or `false`)", "false")

BUDGET = (LIMIT_BYTES, NUM_CPUS, OBJECT_STORE_BYTES, OBJECT_STORE_FRACTION, OBJECT_STORE_MAX_BYTES,
          REDIS_FRACTION, REDIS_MAX_BYTES, HEAP_FRACTION, USAGE_THRESHOLD, MONITOR_REFRESH_MS,
          GUARD_REFRESH_MS, GUARD_MIN_REFRESH_MS, GUARD_THRESHOLD, SHM_BYTES)
RUN = (HEAD_ADDRESS, RAY_AUTH_TOKEN_FILE, REDIS_URL, REDIS_PORT, REDIS_PASSWORD_FILE, HEALTH_PORT,
       RAY_TEMP_DIR, CLUSTER, GROUP, POD_NAME, POD_NAMESPACE, GRACE_SECONDS, RAY_START_PARAMS, NUM_GPUS,
       RAY_RESOURCES, FLUSH_WHEN_AT_LEAST_BYTES, FLUSH_PERIOD_SECS, FLUSH_NUM_ENTRIES_EACH_TIME,
       QUOTA_ENFORCEMENT, QUOTA_TOLERANCE, QUOTA_GRACE_SECONDS, DASHBOARD_PORT, PROFILE, PROFILE_MATCH,
       PROFILE_MAX_BYTES, GCS_REDIS_ADDRESS, GCS_REDIS_PASSWORD, GCS_REDIS_USERNAME, GCS_STORAGE_NAMESPACE,
       EXTERNAL_AUTOSCALER)
SETTINGS = (ROLE,) + RUN + BUDGET

# Set in pods through the downward API for the Ray processes' own use; the runtime passes it
# on to them and does not read it itself.
NODE_NAME_ENV = "NODE_NAME"
PASSED_THROUGH = frozenset({NODE_NAME_ENV})

# What the operator's pod builder sets in a ray-node container (a test holds it to that);
# a template overlay may not set these. The rest of SETTINGS (the guard's period and
# threshold, SHM_BYTES, REDIS_URL) a user may still add through the overlay's env.
OPERATOR_SET = (ROLE, CLUSTER, GROUP, POD_NAME, POD_NAMESPACE, LIMIT_BYTES, HEAD_ADDRESS,
                RAY_AUTH_TOKEN_FILE, REDIS_PASSWORD_FILE, REDIS_PORT, HEALTH_PORT, RAY_TEMP_DIR,
                NUM_CPUS, OBJECT_STORE_BYTES, OBJECT_STORE_FRACTION, OBJECT_STORE_MAX_BYTES,
                REDIS_FRACTION, REDIS_MAX_BYTES, FLUSH_WHEN_AT_LEAST_BYTES, FLUSH_PERIOD_SECS,
                FLUSH_NUM_ENTRIES_EACH_TIME, HEAP_FRACTION, USAGE_THRESHOLD, MONITOR_REFRESH_MS,
                GRACE_SECONDS, RAY_START_PARAMS, NUM_GPUS, RAY_RESOURCES, QUOTA_ENFORCEMENT, QUOTA_TOLERANCE, QUOTA_GRACE_SECONDS,
                PROFILE, PROFILE_MATCH, PROFILE_MAX_BYTES, GCS_REDIS_ADDRESS, GCS_REDIS_PASSWORD,
                GCS_REDIS_USERNAME, GCS_STORAGE_NAMESPACE, EXTERNAL_AUTOSCALER)
# Set only where there is something to say: NUM_GPUS unless a worker has no GPU limit (Ray counts),
# RAY_RESOURCES when the group has custom resources.
ACCELERATOR_SETTINGS = (NUM_GPUS, RAY_RESOURCES)
# Set only in the pods of a group that profiles (a cluster without profiling keeps its pods).
PROFILE_SETTINGS = (PROFILE, PROFILE_MATCH, PROFILE_MAX_BYTES)
# Set only in the pods of a cluster with GCS fault tolerance (the username only when it names one).
GCS_SETTINGS = (GCS_REDIS_ADDRESS, GCS_REDIS_PASSWORD, GCS_REDIS_USERNAME, GCS_STORAGE_NAMESPACE)
# Set only in the head pod of a cluster with autoscaling enabled.
AUTOSCALER_SETTINGS = (EXTERNAL_AUTOSCALER,)
POD_ENV = frozenset(s.env for s in OPERATOR_SET) | PASSED_THROUGH


def by_key(key: str) -> Setting:
    for setting in SETTINGS:
        if setting.key == key:
            return setting
    raise KeyError(key)


def readme_table() -> str:
    """The README's configuration table, one row per setting."""
    rows = ["| Env | Flag | Meaning | Default |", "| --- | --- | --- | --- |"]
    rows += [f"| `{s.env}` | `{s.flag}` | {s.meaning} | {s.default} |" for s in SETTINGS]
    return "\n".join(rows)
