"""Comparing selection methods: statistics, reading experiment results, writing the comparison report."""
