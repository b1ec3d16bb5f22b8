"""Signal processing shared by the tasks: the constant-/variable-Q transform and tuning estimation."""
