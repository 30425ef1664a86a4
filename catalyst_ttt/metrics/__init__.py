"""Metrics of a cell (accuracy, process validity, information gain, probes, stability; docs/metrics.md) and the
statistics that judge a study's cells together (docs/statistics.md)."""
