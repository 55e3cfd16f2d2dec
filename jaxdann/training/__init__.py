"""Training: the train state and step, optimizers, devices, feeds, run folders and the loop."""
