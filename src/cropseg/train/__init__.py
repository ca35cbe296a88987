"""The train_holdout and train stages: the training loop, readable top to bottom."""
