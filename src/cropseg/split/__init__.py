"""The split stage: split-rule presets, the per-patch table, label sets and guards against unlearnable splits."""
