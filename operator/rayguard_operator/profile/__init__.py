"""`rayguard profile`: memray profiles of Ray workers, out of pods or a local run dir."""
