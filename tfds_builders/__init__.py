"""TFDS dataset builders (manual download only): bone scintigraphy and chest X-ray."""
