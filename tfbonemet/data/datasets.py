"""One entry point from a run configuration to the studies of a split, whatever the data source."""
from __future__ import annotations

from tfbonemet.data import synthetic
from tfbonemet.errors import ConfigError

SPLITS = ("train", "validation", "test")


def load_split(config, split: str, log=print) -> synthetic.StudyArrays:
    """Studies of `split` ('train', 'validation' or 'test') for a FitConfig's data source."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if config.data != "phantom":
        raise ConfigError(f"data source {config.data!r} is not supported; use 'phantom'")
    spec = synthetic.SyntheticSpec(num_studies=config.num_studies, height=config.image_height,
                                   width=config.image_width, seed=config.seed)
    return synthetic.load_or_render(spec, log=log).select(split)
