"""The neural-network toolbox shared by training, scoring and prediction: dataset, models, loss, metrics, precise BN, precision, checkpoints."""
