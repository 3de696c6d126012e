"""The performance benchmark: the listener against the inline baseline, the ceiling and its peers (`python -m bench.run`)."""
