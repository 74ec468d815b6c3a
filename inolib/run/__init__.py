"""Training runs: the trainer and its step, the run log, the run-folder lock, failure drills, and sizing and
launching a multi-process run."""
