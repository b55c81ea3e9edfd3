"""Options the manual-download builders share: skip bad inputs, pseudonym salt, split seed."""
from __future__ import annotations

from tfbonemet.errors import DataError


class BuildOptions:
    """Mixin for a `tfds.core.GeneratorBasedBuilder`; list it first among the bases.

    `skip_bad`: leave bad inputs out (their errors collected in `skipped`) instead of stopping at
    the first; `salt`: for patient pseudonyms (default: tfbonemet.data.dicom.default_salt());
    `split_seed`: for the patient-level split.
    """

    def __init__(self, *, skip_bad: bool = False, salt: str | None = None, split_seed: int = 0, **kwargs):
        self._salt = salt
        self._split_seed = split_seed
        self.skipped: list[str] = []
        self.on_bad = self.skipped_error if skip_bad else None
        super().__init__(**kwargs)

    def skipped_error(self, error: DataError) -> None:
        self.skipped.append(str(error))
