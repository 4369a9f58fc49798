"""The systems users pick instead, running the same order saga."""
