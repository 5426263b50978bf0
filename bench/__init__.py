"""rayguard's benchmarks. Each runs from the repository root as `python -m bench.NAME`
(detect, oom_race, reconcile, oom_events); what they share is in :mod:`bench.harness`, and
what they share with the tests in :mod:`testkit`. See README.md beside this file."""
