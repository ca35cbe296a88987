"""The evaluate stage: test metrics, the learning curve of snapshots, figures and the report page."""
