"""The fetch_s4a and fetch_dem stages: S4A patches from the synthetic generator, the Hugging Face Hub or a local folder; elevation tiles."""
