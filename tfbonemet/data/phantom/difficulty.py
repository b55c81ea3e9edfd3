"""How hard the phantom is: finding contrast and size, mimic rates, counts and blur.

`realistic` is calibrated to the real BS-80K chest crops' aggregate statistics (bs80k_reference.json:
lesion contrast as the brightest pixel of positive against negative crops, hot-spot area; held by
tests/test_phantom_bs80k.py); `easy` is for fast learn-above-chance
tests; `hard` is fainter and busier than most clinics.
"""
from __future__ import annotations

import dataclasses

from tfbonemet.vocab import PHANTOM_DIFFICULTIES


@dataclasses.dataclass(frozen=True)
class Difficulty:
    name: str
    contrast: tuple[float, float]  # lesion/bone uptake ratio at a metastasis' centre, range
    contrast_beta: tuple[float, float]  # Beta(a, b) shape over that range; b > a skews towards faint foci
    radius_mm: tuple[float, float]  # metastasis radius (diameter 8-30 mm clinically)
    single_focus: float  # probability a metastatic patient has exactly one focus
    extra_foci: float  # mean number of further foci otherwise (geometric)
    superscan: float  # probability a metastatic patient shows a superscan-like pattern
    mimics: float  # multiplier on every benign mimic's base rate
    count_factor: float  # multiplier on counts per view (kept within the clinical 0.5-2.5 M)
    blur_fwhm_mm: tuple[float, float]  # collimator + intrinsic resolution at the patient
    texture: float  # s.d. of the smooth patchy variation of bone uptake (log scale)


DIFFICULTIES = {
    "easy": Difficulty("easy", (2.5, 5.0), (1.0, 1.0), (7.0, 15.0), 0.0, 4.0, 0.05, 0.2, 1.6, (8.0, 9.0), 0.05),
    "realistic": Difficulty("realistic", (1.5, 5.0), (1.2, 2.6), (4.0, 15.0), 0.4, 2.0, 0.04, 1.0, 1.0, (8.0, 12.0), 0.15),
    "hard": Difficulty("hard", (1.2, 3.0), (1.0, 3.0), (4.0, 12.0), 0.55, 1.5, 0.02, 1.5, 0.6, (10.0, 12.0), 0.2),
}
DEFAULT_DIFFICULTY = "realistic"
assert tuple(DIFFICULTIES) == PHANTOM_DIFFICULTIES, "vocab.PHANTOM_DIFFICULTIES names these for the CLI"


def get(name: str) -> Difficulty:
    if name not in DIFFICULTIES:
        raise ValueError(f"unknown phantom difficulty {name!r}; expected one of {', '.join(DIFFICULTIES)}")
    return DIFFICULTIES[name]
