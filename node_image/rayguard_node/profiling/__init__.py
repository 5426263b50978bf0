"""memray profiles of Ray worker processes: the hook that starts a Tracker in each worker,
and the runtime's index of which file holds which tasks and actors (README, "Profiling")."""
