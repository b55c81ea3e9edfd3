"""Synthetic whole-body bone scintigraphy (Tc-99m MDP) phantom, with a realistic difficulty.

Real bone scans cannot ship with an open-source package, so tests, demos and the default
`tfbonemet fit` use this generator: organic anatomy (anatomy.py), metastases, other classes'
findings and benign mimics (findings.py), attenuation, collimator blur, scatter and Poisson counts
(acquisition.py), and BS-80K-style regional 8-bit crops (bs80k.py).
"""
from tfbonemet.data.phantom.difficulty import DEFAULT_DIFFICULTY, DIFFICULTIES, Difficulty
from tfbonemet.data.phantom.generator import (DEFAULT_SHAPE, FIELD_LENGTH_MM, SMALL_SHAPE, BoneScanPhantom, Lesion,
                                              PhantomStudy)
from tfbonemet.vocab import CLASS_NAMES  # the phantom draws the package's clinical classes

__all__ = ["BoneScanPhantom", "CLASS_NAMES", "DEFAULT_DIFFICULTY", "DEFAULT_SHAPE", "DIFFICULTIES", "Difficulty",
           "FIELD_LENGTH_MM", "Lesion", "PhantomStudy", "SMALL_SHAPE"]
