"""Training: losses and the training loops of the two stages (motion imitation, motion generation)."""
