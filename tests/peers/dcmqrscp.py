"""A dcmtk ``dcmqrscp`` test hospital: a second, independent DIMSE Query/Retrieve SCP.

dcmqrscp answers a C-FIND in the character set the instances were stored in when
the query names none, converts to UTF-8 when the query asks for ISO_IR 192, and
leaves out optional return keys it does not support (ModalitiesInStudy,
NumberOfStudyRelatedInstances). Our calling AE ``PACSFED`` is in its HostTable.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from .ports import LOOPBACK, free_port, port_open, wait_port_closed
from .process import ManagedProcess, PeerError, require_binary

CALLING_AET = "PACSFED"
INSTALL_HINT = "install the Debian package dcmtk (.ci/run does)"


class DcmqrscpPeer:
    """One ``dcmqrscp -c CFG`` on a free loopback port, storage in its own directory.

    ``stop()`` then ``start()`` brings it back on the same port with the same data.
    """

    def __init__(
        self,
        aet: str,
        workdir: Path | None = None,
        *,
        hosts: Mapping[str, tuple[str, str, int]] | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 20.0,
    ) -> None:
        """*hosts* adds HostTable entries ``name = (AET, host, port)`` (move destinations)."""
        self.aet = aet
        self.host = LOOPBACK
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"pacsfed-dcmqrscp-{aet}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir = self.workdir / aet
        self.storage_dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.name = f"dcmqrscp-{aet}"
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        """How long the last ``start()`` took until an echo succeeded."""
        self.hosts: dict[str, tuple[str, str, int]] = {
            "pacsfed": (CALLING_AET, "localhost", 104),
            **(hosts or {}),
        }
        self.config_path = self.workdir / "dcmqrscp.cfg"
        self._write_config()
        self._process: ManagedProcess | None = None
        self._echoscu = "echoscu"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def log_path(self) -> Path:
        return self.workdir / "dcmqrscp.log"

    def _write_config(self) -> None:
        host_lines = "\n".join(
            f"{name} = ({aet}, {host}, {port})" for name, (aet, host, port) in self.hosts.items()
        )
        self.config_path.write_text(
            f"""# written by tests/peers/dcmqrscp.py
NetworkTCPPort = {self.port}
MaxPDUSize = 16384
MaxAssociations = 16

HostTable BEGIN
{host_lines}
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{self.aet} {self.storage_dir} RW (200, 1024mb) ANY
AETable END
""",
            encoding="ascii",
        )

    def start(self) -> float:
        """Start dcmqrscp and wait until it answers a C-ECHO; return the seconds taken."""
        if self.running:
            return 0.0
        binary = require_binary("dcmqrscp", INSTALL_HINT)
        self._echoscu = require_binary("echoscu", INSTALL_HINT)
        argv = [binary, "-c", str(self.config_path), "-dhl", *self.extra_args]
        self._process = ManagedProcess(self.name, argv, log_path=self.log_path, cwd=self.workdir)
        self._process.start()
        self.startup_seconds = self._process.wait_until(
            self.echo, timeout=self.start_timeout, what="answering C-ECHO", interval=0.05
        )
        return self.startup_seconds

    def echo(self) -> bool:
        """True when a C-ECHO from PACSFED succeeds."""
        if not port_open(self.port):
            return False
        result = subprocess.run(
            [
                self._echoscu,
                "-to",
                "5",
                "-ta",
                "5",
                "-td",
                "5",
                "-aec",
                self.aet,
                "-aet",
                CALLING_AET,
                self.host,
                str(self.port),
            ],
            capture_output=True,
            timeout=15,
            check=False,
        )
        return result.returncode == 0

    def stop(self, *, graceful: bool = True) -> None:
        """Stop dcmqrscp and its forked children; ``graceful=False`` kills them."""
        if self._process is not None:
            self._process.stop(graceful=graceful)
            self._process = None
            wait_port_closed(self.port)

    def log_tail(self, lines: int = 40) -> str:
        return ManagedProcess.read_tail(self.log_path, lines)

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def close(self) -> None:
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DcmqrscpPeer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def load(self, paths: Iterable[Path]) -> None:
        """C-STORE the files with ``storescu`` (calling AE PACSFED)."""
        files = [str(p) for p in paths]
        if not files:
            return
        storescu = require_binary("storescu", INSTALL_HINT)
        result = subprocess.run(
            [storescu, "-aec", self.aet, "-aet", CALLING_AET, self.host, str(self.port), *files],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = result.stdout + result.stderr
        if result.returncode != 0 or "E: " in output:
            raise PeerError(f"{self.name}: storescu failed (exit {result.returncode}):\n{output[-3000:]}")

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"DcmqrscpPeer(aet={self.aet!r}, port={self.port}, {state})"
