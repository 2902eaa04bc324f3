"""An Orthanc test hospital: DICOMweb (QIDO/WADO) and DIMSE on free loopback ports.

Orthanc answers C-FIND only from calling AE titles listed in ``DicomModalities``;
ours (``PACSFED``) is always there. Orthanc 1.10.1 re-encodes C-FIND answers, and the
DICOM JSON of its QIDO answers, into its ``DefaultEncoding`` (Latin1 unless
*default_encoding* says otherwise) whatever Specific Character Set the query names:
under Latin1, Greek and CJK characters are dropped from the answer (seen with
``\\ISO 2022 IR 87`` and ISO_IR 126 studies); under ``Utf8`` every script comes back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from .ports import LOOPBACK, free_port, port_open, wait_port_closed
from .process import ManagedProcess, PeerError, require_binary

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
CALLING_AET = "PACSFED"
"""The AE title our federation service calls with."""

INSTALL_HINT = "install Debian packages orthanc and orthanc-dicomweb (.ci/run does)"


class OrthancPeer:
    """One Orthanc server with the DICOMweb plugin, storage in its own directory.

    ``stop()`` then ``start()`` brings it back on the same ports with the same data.
    """

    def __init__(
        self,
        aet: str,
        workdir: Path | None = None,
        *,
        modalities: Mapping[str, Sequence[str | int]] | None = None,
        name: str | None = None,
        default_encoding: str | None = None,
        extra_config: Mapping[str, object] | None = None,
        start_timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """*modalities* adds ``DicomModalities`` entries (``{"id": [AET, host, port]}``);
        *default_encoding* sets ``DefaultEncoding`` (e.g. ``"Utf8"``; Orthanc's default,
        Latin1, when None); *extra_config* is merged last into the configuration; *env* is
        added to the process's environment (e.g. ``OPENSSL_CONF``)."""
        self.env = dict(env) if env is not None else None
        self.aet = aet
        self.host = LOOPBACK
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"pacsfed-orthanc-{aet}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.name = name or f"orthanc-{aet}"
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        """How long the last ``start()`` took until Orthanc answered."""
        self.config_path = self.workdir / "orthanc.json"
        self.modalities: dict[str, list[str | int]] = {"pacsfed": [CALLING_AET, LOOPBACK, 104]}
        for key, value in (modalities or {}).items():
            self.modalities[key] = list(value)
        self.default_encoding = default_encoding
        self.extra_config = dict(extra_config or {})
        users = (
            self.extra_config.get("RegisteredUsers")
            if self.extra_config.get("AuthenticationEnabled")
            else None
        )
        self.auth: tuple[str, str] | None = (
            next(iter(users.items())) if isinstance(users, dict) and users else None
        )
        """Credentials the harness itself uses when the configuration turns authentication on."""
        self._write_config()
        self._process: ManagedProcess | None = None

    # -- addresses ---------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    # -- lifecycle ---------------------------------------------------------------
    def _write_config(self) -> None:
        config: dict[str, object] = {
            "Name": self.name,
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomModalities": self.modalities,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "StorageCompression": False,
            "SaveJobs": False,
            "ConcurrentJobs": 2,
            "HttpsVerifyPeers": False,
        }
        if self.default_encoding is not None:
            config["DefaultEncoding"] = self.default_encoding
        config.update(self.extra_config)
        self.config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")

    def start(self) -> float:
        """Start Orthanc and wait until ``GET /system`` answers; return the seconds taken."""
        if self.running:
            return 0.0
        binary = require_binary("Orthanc", INSTALL_HINT)
        if not DICOMWEB_PLUGIN.is_file():
            raise PeerError(f"DICOMweb plugin {DICOMWEB_PLUGIN} missing: {INSTALL_HINT}")
        self._process = ManagedProcess(
            self.name,
            [binary, str(self.config_path)],
            log_path=self.log_path,
            cwd=self.workdir,
            env={**os.environ, **self.env} if self.env is not None else None,
        )
        self._process.start()
        self.startup_seconds = self._process.wait_until(
            self._ready, timeout=self.start_timeout, what="answering GET /system"
        )
        return self.startup_seconds

    def _ready(self) -> bool:
        response = httpx.get(f"{self.http_url}/system", timeout=1.0, auth=self.auth)
        return response.status_code == 200 and port_open(self.dicom_port)

    def stop(self, *, graceful: bool = True) -> None:
        """Shut Orthanc down (about 3 s: its threads poll); ``graceful=False`` kills it."""
        if self._process is not None:
            self._process.stop(graceful=graceful)
            self._process = None
            wait_port_closed(self.http_port)

    def log_tail(self, lines: int = 40) -> str:
        return ManagedProcess.read_tail(self.log_path, lines)

    def ensure_running(self) -> None:
        """Start again if a test left the peer stopped."""
        if not self.running:
            self.start()

    def close(self) -> None:
        """Kill (its data is not needed any more) and remove a work directory made here."""
        self.stop(graceful=False)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> OrthancPeer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- data ----------------------------------------------------------------------
    def upload(self, paths: Iterable[Path]) -> list[str]:
        """``POST /instances`` each file; return Orthanc's instance ids."""
        ids: list[str] = []
        with httpx.Client(base_url=self.http_url, timeout=30.0, auth=self.auth) as client:
            for path in paths:
                response = client.post(
                    "/instances",
                    content=Path(path).read_bytes(),
                    headers={"Content-Type": "application/dicom"},
                )
                if response.status_code != 200:
                    raise PeerError(
                        f"{self.name}: upload of {path} failed: {response.status_code} {response.text[:500]}"
                    )
                body = response.json()
                if body.get("Status") not in ("Success", "AlreadyStored"):
                    raise PeerError(f"{self.name}: upload of {path} answered {body}")
                ids.append(body["ID"])
        return ids

    def get(self, path: str, **params: str) -> httpx.Response:
        """A GET on the REST API (``path`` starts with ``/``)."""
        return httpx.get(f"{self.http_url}{path}", params=params, timeout=30.0, auth=self.auth)

    def study_uids(self) -> set[str]:
        """StudyInstanceUIDs stored here, through the REST API."""
        response = httpx.get(f"{self.http_url}/studies", params={"expand": "1"}, timeout=30.0, auth=self.auth)
        response.raise_for_status()
        return {s["MainDicomTags"]["StudyInstanceUID"] for s in response.json()}

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"OrthancPeer(aet={self.aet!r}, http={self.http_port}, dicom={self.dicom_port}, {state})"
