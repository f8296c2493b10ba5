"""Offline data selection for training sets: readers, scorers, filters, dedup, DSIR, executors."""
