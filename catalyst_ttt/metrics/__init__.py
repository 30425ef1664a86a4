"""Metrics from DESIGN.md: accuracy, process validity, information gain, stability."""
