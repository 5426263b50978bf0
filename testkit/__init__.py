"""What the tests and the benchmarks share (see README.md beside this file).

- :mod:`testkit.kube`: a Kubernetes API emulator on kmock, served over HTTP, and the glue to
  run kopf and the kubernetes client against it.
- :mod:`testkit.nodes`: real `rayguard-node run` processes (and Ray drivers) in memory cgroups.

It lives at the repository root, importable by both: pytest puts the root on `sys.path`
(tests/ is a package), and the benchmarks run from the root as `python -m bench.NAME`.
"""
