"""Shared fixtures: an isolated cache, and one tiny trained run reused by every test that needs a model."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY = dict(num_studies=40, image_height=128, image_width=32, epochs=2, batch_size=8,
            model_options={"filters": [8, 16, 16]})


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Tests never read or write the user's cache."""
    cache = tmp_path_factory.mktemp("tfbonemet-cache")
    previous = os.environ.get("TFBONEMET_CACHE")
    os.environ["TFBONEMET_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("TFBONEMET_CACHE", None)
    else:
        os.environ["TFBONEMET_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory):
    """A real run directory from `fit` on a tiny phantom set (a few seconds)."""
    from tfbonemet.config import resolve
    from tfbonemet.tasks.train.trainer import fit

    out = tmp_path_factory.mktemp("runs")
    return fit(resolve(overrides={**TINY, "output_dir": str(out), "run_name": "tiny"}), log=lambda *_: None)
