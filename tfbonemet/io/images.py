"""The one image reader of the package: PNG/JPEG -> uint16 counts, and the checks every view passes.

`data build` and `predict` read every image here (DICOM through tfbonemet.io.dicom, which checks its
views with the same functions; tfbonemet.io.discovery.read_view takes either), so a study is accepted
or refused by one rule:
- grey: 8-bit keeps its 0-255 values, 16-bit its counts; RGB/RGBA/palette images whose channels agree
  (a grey scan saved in colour) become grey, truly coloured images are refused;
- a scan needs grey levels and counts: 1-bit images, all-zero images and images under MIN_SIDE pixels
  a side are refused, not predicted;
- at most MAX_PIXELS per view, checked from the header before decoding, so a huge or decompression-bomb
  file is refused before it takes memory;
- the two views of a study have one size.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from tfbonemet.errors import DataError
from tfbonemet.vocab import ANTERIOR, POSTERIOR

MAX_PIXELS = 5000 * 5000  # per view: a whole-body scan is 1024 x 256, a chest radiograph about 3000 x 3000
MIN_SIDE = 8  # BS-80K crops are small, but a 2x2 or 4x4 "image" is no scan
_GREY_TOLERANCE = 3  # channel difference (8-bit levels) JPEG chroma rounding leaves in a grey image


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def check_size(where, height: int, width: int) -> None:
    """Refuse a view too large to read safely or too small to be a scan, before decoding it."""
    if height * width > MAX_PIXELS:
        raise DataError(f"{where}: image of {height}x{width} pixels is larger than the {MAX_PIXELS:,} pixels "
                        f"a view may have; downsample it first")
    if min(height, width) < MIN_SIDE:
        raise DataError(f"{where}: image of {height}x{width} pixels is too small to be a scan "
                        f"(at least {MIN_SIDE} pixels a side)")


def check_counts(where, image: np.ndarray) -> np.ndarray:
    """A decoded view as the model may read it: 2-D, sized as check_size allows, not all zero."""
    if image.ndim != 2:
        raise DataError(f"{where}: expected one 2-D single-channel image, got shape {image.shape}")
    check_size(where, *image.shape)
    if not image.any():
        raise DataError(f"{where}: every pixel is 0: an empty image, not a scan")
    return image


def check_pair(where, views: dict[str, np.ndarray]) -> None:
    """The anterior and posterior views of one study have one size (they are read as one pair)."""
    if ANTERIOR in views and POSTERIOR in views and views[ANTERIOR].shape != views[POSTERIOR].shape:
        raise DataError(f"{where}: anterior {views[ANTERIOR].shape} and posterior {views[POSTERIOR].shape} "
                        f"views differ in size")


def _grey(path: Path, array: np.ndarray) -> np.ndarray:
    """Colour channels -> one grey channel when they agree; refuse a truly coloured image."""
    colour = array[..., :3].astype(np.int32)
    spread = np.abs(colour - colour[..., :1]).max()
    if spread > _GREY_TOLERANCE:
        raise DataError(f"{path}: is a colour image (channels differ by up to {spread} levels); the model reads "
                        f"single-channel count images: save it as grayscale")
    return np.rint(colour.mean(axis=-1)).astype(array.dtype)


def read_image(path: str | Path) -> np.ndarray:
    """A PNG/JPEG as (H, W) uint16 counts under the rules above."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # check_size says it plainly
            with Image.open(path) as img:
                check_size(path, img.height, img.width)
                if img.mode == "1":
                    raise DataError(f"{path}: is a 1-bit (black and white) image; a scan needs grey levels")
                if img.mode == "P":
                    img = img.convert("RGBA")
                array = np.asarray(img)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: refused as a decompression bomb ({_first_line(exc)})") from None
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable image ({_first_line(exc)})") from None
    if array.ndim == 3:
        array = array[..., 0] if array.shape[-1] <= 2 else _grey(path, array)  # L/LA: the grey channel
    if array.dtype.kind == "f":
        array = np.rint(np.nan_to_num(array))
    return check_counts(path, np.clip(array, 0, np.iinfo(np.uint16).max).astype(np.uint16))
