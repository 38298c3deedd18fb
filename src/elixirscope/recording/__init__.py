"""Recording: capture pipeline, the recording file, correlation, queries and exports."""
