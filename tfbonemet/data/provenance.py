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
    """`folder` holds only synthetic studies: `data phantom` marked it, or every DICOM file in it is one
    the phantom wrote (Manufacturer "tfbonemet phantom"; the first other file ends the search)."""
    import pydicom

    if (Path(folder) / PHANTOM_MARKER).is_file():
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
    """Record that `folder` holds only synthetic studies (no real patient behind any pseudonym)."""
    write_text(Path(folder) / PHANTOM_MARKER, "synthetic studies only: no real patient behind any pseudonym\n")


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
