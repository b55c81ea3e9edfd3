"""Whole-body bone scintigraphy (anterior + posterior views) as a TFDS dataset."""
