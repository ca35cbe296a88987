"""Data selection during training (RHO-Loss and its baselines): the method grammar, the selector and the precomputed irreducible losses."""
