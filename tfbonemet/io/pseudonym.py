"""Keyed pseudonyms: HMAC-SHA256 of an identifier under a per-site secret.

A plain salted hash with a public salt can be reversed by hashing every possible patient ID; an HMAC
under a secret only the site holds cannot. The secret comes from `$TFBONEMET_SECRET`, or from a file
named by `$TFBONEMET_SECRET_FILE` (`--secret-file`); `$TFBONEMET_SALT` is read as a deprecated alias.
With none set, a public default is used and a loud warning says so; building a dataset from real
(non-phantom) data then needs an explicit `--allow-public-secret` (tfbonemet.data.provenance).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import sys
from pathlib import Path

from tfbonemet.errors import ConfigError

SECRET_ENV = "TFBONEMET_SECRET"
SECRET_FILE_ENV = "TFBONEMET_SECRET_FILE"
DEPRECATED_SALT_ENV = "TFBONEMET_SALT"
PUBLIC_SECRET = "tfbonemet"  # known to everyone: pseudonyms under it are reversible
_warned = False


def keyed_hash(identifier: str, secret: str) -> str:
    """A stable pseudonym (16 hex digits) of `identifier`: HMAC-SHA256 under `secret`, so it cannot be
    recomputed without the secret."""
    return hmac.new(secret.encode("utf-8", "surrogateescape"), identifier.encode("utf-8", "surrogateescape"),
                    hashlib.sha256).hexdigest()[:16]


def study_key_for_uid(study_instance_uid: str, secret: str | None = None) -> str:
    """The pseudonymous key of a study, so label files keyed by StudyInstanceUID can be joined."""
    return keyed_hash(f"study:{study_instance_uid}", secret or site_secret())


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
