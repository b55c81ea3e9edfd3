"""Single-view chest radiographs as a TFDS dataset, for pre-training a backbone."""
