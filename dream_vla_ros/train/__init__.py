"""Where do weights come from? Datasets, training and checkpoints."""
