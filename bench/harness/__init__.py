"""What the benchmarks share, and the parts of each that are not its command line and tables.

Shared:
- :mod:`bench.harness.procfs`: /proc readers (peak RSS, CPU time, whether a process exits).
- :mod:`bench.harness.waiting`: polling until a condition, and teardown that runs every step.
- :mod:`bench.harness.output`: number formatting, percentiles, column tables, the load line.
- :mod:`bench.harness.emulator`: the tests' Kubernetes API emulator, recording who wrote what,
  fast enough at 200 clusters, and how the benchmarks start it.
- :mod:`bench.harness.operator_process`: `rayguard operator --standalone` as a child process.
- :mod:`bench.harness.sampler`: a cgroup's working set sampled every ~2 ms from a thread.
- :mod:`bench.harness.ray_nodes`: Ray alone, and `rayguard-node run`, in a scratch cgroup.

One benchmark's:
- :mod:`bench.harness.oom_race_cell`: one (setup, rate) cell of `bench.oom_race`.
- :mod:`bench.harness.oom_events_clusters` and :mod:`bench.harness.oom_events_naive`: the
  clusters with real head Redis servers, and the naive consumer, of `bench.oom_events`.
- :mod:`bench.harness.replica_scale`: one cell (G groups of R replicas, batched or not) of
  `bench.reconcile --case replicas`.
- :mod:`bench.harness.reconcile_report`: `bench.reconcile`'s results per cluster count, and
  its table and details.
- :mod:`bench.harness.autoscale_cluster`, :mod:`bench.harness.autoscale_driver`,
  :mod:`bench.harness.autoscale_limit_node` and :mod:`bench.harness.autoscale_report`: the
  recording local clusters (heap- or limit-advertising), the driver, the limit side's node
  entry point, and the figures and tables of `bench.autoscale`.

Modules here never import a benchmark's own module: that runs as `__main__`.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
