"""Where a dataset's studies come from, and the secret a build of them needs.

`tfbonemet data phantom` marks what it writes as synthetic; a folder of real scans carries no mark.
A build of real data under the public default secret would give reversible pseudonyms, so it is
refused unless the user allows it; synthetic studies have no patient behind them and build without
a site secret (tfbonemet.io.pseudonym holds the secret itself).
"""
from __future__ import annotations

from pathlib import Path

from tfbonemet.errors import DataError
from tfbonemet.io.atomic import write_text
from tfbonemet.io.files import dicom_files
from tfbonemet.io.pseudonym import PUBLIC_SECRET, SECRET_ENV, configured_secret, site_secret

PHANTOM_MARKER = ".tfbonemet-phantom"  # `tfbonemet data phantom` leaves it in what it writes
PHANTOM_MANUFACTURER = "tfbonemet phantom"  # the Manufacturer of every phantom DICOM file


def is_phantom(folder: Path) -> bool:
    """`folder` holds only synthetic studies: `data phantom` marked it and it holds exactly the files the
    mark lists (by name and size), or every DICOM file in it is one the phantom wrote (Manufacturer
    "tfbonemet phantom"; the first other file ends the search). A mark alone, in a folder holding
    other files, proves nothing."""
    import pydicom

    if _marked_files(Path(folder)) == _files_of(Path(folder)):
        return True
    if not (Path(folder) / "labels.csv").is_file():
        return False

    def synthetic(path: Path) -> bool:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Manufacturer"])
        except Exception:  # unreadable: not known to be synthetic (the reader reports it by name)
            return False
        return str(header.get("Manufacturer", "")) == PHANTOM_MANUFACTURER

    files = dicom_files([folder])
    return bool(files) and all(map(synthetic, files))


def mark_phantom(folder: Path) -> None:
    """Record that `folder`, as it is now, holds only synthetic studies (no real patient behind any
    pseudonym): the mark lists every file in it with its size."""
    listing = "".join(f"{size} {name}\n" for name, size in sorted(_files_of(Path(folder)).items()))
    write_text(Path(folder) / PHANTOM_MARKER, MARK_HEADER + listing)


MARK_HEADER = "synthetic studies only: no real patient behind any pseudonym; files (bytes, name):\n"


def _files_of(folder: Path) -> dict[str, int]:
    """Every file under `folder` but the mark: relative name -> size."""
    return {path.relative_to(folder).as_posix(): path.stat().st_size for path in folder.rglob("*")
            if path.is_file() and path.name != PHANTOM_MARKER}


def _marked_files(folder: Path) -> dict[str, int] | None:
    """The files a phantom mark lists, or None when there is no mark (or one of an older kind)."""
    try:
        text = (folder / PHANTOM_MARKER).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith(MARK_HEADER):
        return None
    listed = {}
    for line in text[len(MARK_HEADER):].splitlines():
        size, _, name = line.partition(" ")
        if not size.isdigit() or not name:
            return None
        listed[name] = int(size)
    return listed or None


def secret_for_build(manual_dir: Path, secret: str | None, allow_public: bool) -> str:
    """The secret to build `manual_dir` with: refuses real data under the public default unless allowed."""
    secret = secret or configured_secret()
    if secret:
        return secret
    if is_phantom(manual_dir):
        return PUBLIC_SECRET  # no patient behind these pseudonyms: nothing to warn about
    if not allow_public:
        raise DataError(f"{manual_dir}: no site secret set, so its pseudonyms would be reversible: set "
                        f"{SECRET_ENV} (or --secret-file) to a secret of your site, or pass --allow-public-secret "
                        f"for data that hold no real patients")
    return site_secret()
