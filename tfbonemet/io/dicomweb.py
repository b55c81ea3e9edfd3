"""A PACS over DICOMweb (dicomweb-client): find studies (QIDO-RS), fetch their NM images (WADO-RS),
send results back (STOW-RS).

Credentials never go on the command line: HTTP basic auth comes from `$TFBONEMET_DICOMWEB_USER` and
`$TFBONEMET_DICOMWEB_PASSWORD`, a bearer token from `$TFBONEMET_DICOMWEB_TOKEN`; a site CA bundle
from requests' own `$REQUESTS_CA_BUNDLE`. Errors name the server without any user:password part.
"""
from __future__ import annotations

import os
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit

from pydicom.dataset import Dataset

from tfbonemet.errors import DataError

USER_ENV, PASSWORD_ENV, TOKEN_ENV = "TFBONEMET_DICOMWEB_USER", "TFBONEMET_DICOMWEB_PASSWORD", "TFBONEMET_DICOMWEB_TOKEN"
NM_MODALITY = "NM"
TIMEOUT_S = 60
PAGE = 200
RETRIES = 3  # attempts per request: a busy PACS gets a second chance, a wrong URL fails fast


def _safe(url: str) -> str:
    """The URL as it may appear in a message: no user name or password."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def connect(url: str, session=None):
    """A DICOMweb client for `url` (the service root, e.g. https://pacs/dicom-web), with the site's auth."""
    import requests
    from dicomweb_client import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataError(f"DICOMweb URL {url!r}: expected http(s)://host[:port]/path")
    if session is None:
        user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
        session = create_session_from_user_pass(user, password) if user else requests.Session()
    headers = {"Authorization": f"Bearer {os.environ[TOKEN_ENV]}"} if os.environ.get(TOKEN_ENV) else None
    client = DICOMwebClient(url.rstrip("/"), session=session, headers=headers, timeout=TIMEOUT_S)
    client.set_http_retry_params(max_attempts=RETRIES, wait_exponential_multiplier=500)  # ~1.5 s, not ~30 s
    return client


def _call(client, what: str, function, *args, **kwargs):
    """Run one DICOMweb request; network and HTTP failures become one-line DataErrors."""
    import requests

    try:
        return function(*args, **kwargs)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise DataError(f"DICOMweb {_safe(client.base_url)}: {what} failed with HTTP {status}") from None
    except requests.RequestException as exc:
        raise DataError(f"DICOMweb {_safe(client.base_url)}: {what} failed ({type(exc).__name__})") from None


def _value(attributes: dict, tag: str):
    values = attributes.get(tag, {}).get("Value") or [None]
    return values[0]


def search_studies(client, modality: str = NM_MODALITY, **filters) -> list[str]:
    """QIDO-RS: StudyInstanceUIDs of studies holding `modality` images that match `filters`
    (DICOM keywords, e.g. StudyDate="20240101-20240131")."""
    uids: list[str] = []
    while True:  # pages by hand: dicomweb-client's get_remaining never ends on a server that ignores offset
        page = _call(client, "study search", client.search_for_studies, limit=PAGE, offset=len(uids),
                     search_filters={"ModalitiesInStudy": modality, **filters})
        new = [uid for uid in (_value(s, "0020000D") for s in page) if uid and uid not in uids]
        uids += new
        if len(page) < PAGE or not new:
            return uids


def retrieve_nm(client, study_instance_uid: str) -> list[Dataset]:
    """WADO-RS: every NM instance of one study (series found by QIDO-RS, so results stored earlier
    in the study, SR or Secondary Capture, are not fetched)."""
    series = _call(client, "series search", client.search_for_series, study_instance_uid=study_instance_uid,
                   search_filters={"Modality": NM_MODALITY})
    datasets = []
    for item in series:
        uid = _value(item, "0020000E")
        if uid and _value(item, "00080060") in (None, NM_MODALITY):
            datasets += _call(client, "series retrieval", client.retrieve_series, study_instance_uid, uid)
    if not datasets:
        raise DataError(f"DICOMweb {_safe(client.base_url)}: the study has no NM images")
    return datasets


def store(client, datasets: Iterable[Dataset]) -> int:
    """STOW-RS: send instances; returns how many the server accepted, raises if it refused any."""
    datasets = list(datasets)
    if not datasets:
        return 0
    response = _call(client, "store", client.store_instances, datasets)
    failed = response.get("FailedSOPSequence", []) if response is not None else []
    if failed:
        reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
        raise DataError(f"DICOMweb {_safe(client.base_url)}: the server refused {len(failed)} of {len(datasets)} "
                        f"instances (failure reason {', '.join(reasons)})")
    return len(datasets)
