"""rayguard's node runtime: cgroup-aware memory model, Ray supervisor and OOM guard."""

__version__ = "0.1.0"
