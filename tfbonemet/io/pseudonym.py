"""Keyed pseudonyms: HMAC-SHA256 of an identifier under a per-site secret.

A plain salted hash with a public salt can be reversed by hashing every possible patient ID; an HMAC
under a secret only the site holds cannot. The secret comes from `$TFBONEMET_SECRET`, or from a file
named by `$TFBONEMET_SECRET_FILE` (`--secret-file`); `$TFBONEMET_SALT` is read as a deprecated alias.
With none set, a public default is used and a loud warning says so; building a dataset from real
(non-phantom) data then needs an explicit `--allow-public-secret`.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import sys
from pathlib import Path

from tfbonemet.errors import ConfigError, DataError

SECRET_ENV = "TFBONEMET_SECRET"
SECRET_FILE_ENV = "TFBONEMET_SECRET_FILE"
DEPRECATED_SALT_ENV = "TFBONEMET_SALT"
PUBLIC_SECRET = "tfbonemet"  # known to everyone: pseudonyms under it are reversible
PHANTOM_MARKER = ".tfbonemet-phantom"  # `tfbonemet data phantom` leaves it in what it writes
PHANTOM_MANUFACTURER = "tfbonemet phantom"  # the Manufacturer of every phantom DICOM file
_warned = False


def salted_patient_hash(patient_key: str, salt: str) -> str:
    """A stable pseudonym (16 hex digits) of `patient_key`; without the secret `salt` it cannot be recomputed."""
    return hmac.new(salt.encode("utf-8", "surrogateescape"), patient_key.encode("utf-8", "surrogateescape"),
                    hashlib.sha256).hexdigest()[:16]


def study_key_for_uid(study_instance_uid: str, secret: str | None = None) -> str:
    """The pseudonymous key of a study, so label files keyed by StudyInstanceUID can be joined."""
    return salted_patient_hash(f"study:{study_instance_uid}", secret or site_secret())


def configured_secret() -> str | None:
    """The site's secret from the environment (or the file it names); None when none is set."""
    path = os.environ.get(SECRET_FILE_ENV)
    if path:
        try:
            secret = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"secret file {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
        if not secret:
            raise ConfigError(f"secret file {path} is empty")
        return secret
    return os.environ.get(SECRET_ENV) or os.environ.get(DEPRECATED_SALT_ENV) or None


def site_secret() -> str:
    """The secret every pseudonym is keyed with; the public default, with one loud warning, if none is set."""
    global _warned
    secret = configured_secret()
    if secret:
        return secret
    if not _warned:
        _warned = True
        print(f"Warning: no site secret set ({SECRET_ENV} or --secret-file): patient and study pseudonyms use "
              f"the public default and can be reversed by anyone with a list of IDs", file=sys.stderr)
    return PUBLIC_SECRET


def is_phantom(folder: Path) -> bool:
    """`folder` holds only synthetic studies: `data phantom` marked it, or every DICOM file in it is one
    the phantom wrote (Manufacturer "tfbonemet phantom"; the first other file ends the search)."""
    import pydicom

    from tfbonemet.io.discovery import dicom_files

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
    from tfbonemet.io.atomic import write_text

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
