"""Shared plumbing of every stage: typed params, validation messages, atomic writes, files, executors, downloads, the stage runner and the code-dependency check."""
