"""A real Orthanc PACS for tests: its own config, storage and free loopback port in a temp folder,
with the DICOMweb plugin; stopped by its PID. A missing Orthanc skips locally and fails under CI."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OrthancServer:
    def __init__(self, folder: Path):
        for needed in (ORTHANC, DICOMWEB_PLUGIN):
            if not needed.exists():
                message = f"{needed} not found: apt-get install orthanc orthanc-dicomweb"
                if os.environ.get("CI"):
                    pytest.fail(message)
                pytest.skip(message)
        self.folder = folder
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = f"{self.url}/dicom-web"
        config = {
            "Name": "tfbonemet-test", "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"), "HttpPort": self.port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomServerEnabled": False,
            "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
        self.log = open(folder / "orthanc.log", "wb")
        self.process = subprocess.Popen([str(ORTHANC), str(folder / "orthanc.json")], stdout=self.log,
                                        stderr=subprocess.STDOUT, cwd=folder)
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: "
                                   f"{(self.folder / 'orthanc.log').read_text(errors='replace')[-2000:]}")
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer GET /system within {START_TIMEOUT_S} s")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def upload(self, path) -> dict:
        """POST one DICOM file to /instances (Orthanc's REST API, not DICOMweb)."""
        request = urllib.request.Request(self.url + "/instances", data=Path(path).read_bytes(), method="POST",
                                         headers={"Content-Type": "application/dicom"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def instance_file(self, orthanc_id: str) -> bytes:
        with urllib.request.urlopen(f"{self.url}/instances/{orthanc_id}/file", timeout=30) as response:
            return response.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
