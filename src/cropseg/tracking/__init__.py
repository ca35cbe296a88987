"""Experiment tracking: DVCLive for dvc exp show / dvc plots, Weights & Biases runs and their lineage."""
