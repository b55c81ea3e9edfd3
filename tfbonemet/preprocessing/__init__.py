"""Preprocessing: the ScanPreprocessor every task calls, and training-only augmentation."""
from tfbonemet.preprocessing.scan_preprocessor import CROPS, NORMALISATIONS, Geometry, ScanPreprocessor, cropped_shape

__all__ = ["CROPS", "NORMALISATIONS", "Geometry", "ScanPreprocessor", "cropped_shape"]
