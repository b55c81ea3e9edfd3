"""What the manual-download builders share: skip-bad/secret/split-seed options and fast 16-bit PNG encoding."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tfbonemet.errors import DataError

INCOMPLETE_PREFIX = "incomplete."  # tensorflow_datasets.core.constants.INCOMPLETE_PREFIX


class BuildOptions:
    """Mixin for a `tfds.core.GeneratorBasedBuilder`; list it first among the bases.

    `skip_bad`: leave bad inputs out (their errors collected in `skipped`) instead of stopping at
    the first; `secret`: the site secret of patient pseudonyms (default: tfbonemet.io.pseudonym's configured
    one; real data are refused under the public default unless `allow_public_secret`);
    `split_seed`: for the patient-level split.
    """

    def __init__(self, *, skip_bad: bool = False, secret: str | None = None, allow_public_secret: bool = False,
                 split_seed: int = 0, **kwargs):
        self._secret = secret
        self._allow_public_secret = allow_public_secret
        self._split_seed = split_seed
        self.skipped: list[str] = []
        self.on_bad = self.skipped_error if skip_bad else None
        super().__init__(**kwargs)

    def skipped_error(self, error: DataError) -> None:
        self.skipped.append(str(error))

    def download_and_prepare(self, *args, **kwargs):
        """TFDS's build, one process at a time per dataset configuration (a second build into the same
        data dir is refused while the first runs), first removing the `incomplete.*` folders a killed
        build left beside the version folder."""
        from tfbonemet.io.atomic import make_dir, remove_stale
        from tfbonemet.io.lock import exclusive

        sweep_builds(self.data_dir_root)
        config_dir = make_dir(Path(self.data_dir).parent)
        try:
            with exclusive(config_dir / BUILD_LOCK, f"dataset {config_dir}"):
                remove_stale(config_dir, ".building.[0-9]*")  # markers of builds before the lock
                for stale in config_dir.glob(f"{INCOMPLETE_PREFIX}*"):
                    shutil.rmtree(stale, ignore_errors=True)
                return super().download_and_prepare(*args, **kwargs)
        finally:
            if config_dir.is_dir() and not any(config_dir.iterdir()):  # a first build that failed
                config_dir.rmdir()


BUILD_LOCK = ".building.lock"


def sweep_builds(data_dir) -> list[Path]:
    """Remove what killed builds left in `data_dir`, of any dataset or configuration: TFDS's `incomplete.*`
    folders and the lock files, where no build of that configuration runs (its lock is free); a folder
    left empty goes too. Returns the removed paths."""
    from tfbonemet.io.atomic import remove_stale
    from tfbonemet.io.lock import unless_held

    data_dir = Path(data_dir)
    left = [*data_dir.glob(f"*/{INCOMPLETE_PREFIX}*"), *data_dir.glob(f"*/*/{INCOMPLETE_PREFIX}*"),
            *data_dir.glob(f"*/{BUILD_LOCK}"), *data_dir.glob(f"*/*/{BUILD_LOCK}")]
    removed = []
    for config_dir in sorted({path.parent for path in left}):
        with unless_held(config_dir / BUILD_LOCK) as free:
            if not free:
                continue
            for stale in sorted(config_dir.glob(f"{INCOMPLETE_PREFIX}*")):
                shutil.rmtree(stale, ignore_errors=True)
                removed.append(stale)
            removed += remove_stale(config_dir, ".building.[0-9]*")
        for folder in (config_dir, config_dir.parent):  # a first build killed: nothing else is there
            if folder != data_dir and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return removed


def png16(image: np.ndarray) -> bytes:
    """A uint16 H x W image as PNG bytes for a `tfds.features.Image(dtype=np.uint16)` feature.

    TFDS's own encoder (tf.image.encode_png at zlib level 6) dominates build time on whole-body
    views; zlib level 1 encodes about 5x faster for about 15% larger files, decoding identically.
    """
    if image.dtype != np.uint16 or image.ndim != 2:
        raise ValueError(f"expected a uint16 H x W image, got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
