"""Child-process scripts driven by the concurrency and crash tests."""
