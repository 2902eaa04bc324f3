"""The facade's listener: a TCP (or DICOM TLS) server on the event loop, its gate, started and stopped with the app."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dicom_facade._association import (
    Answerer,
    AssociationProtocol,
    Timeouts,
    serve_association,
)
from dicom_facade._negotiation import APPLICATION_CONTEXT, Rejection, Request
from federation.access import Principal, PrincipalKind
from federation.errors import ConfigError
from federation.settings import DicomFacadeSettings
from federation.tls import server_context

log = logging.getLogger("pacsfed.dicom_facade")


async def check_listen(settings: DicomFacadeSettings) -> None:
    """ConfigError now when the facade could not start: its port taken, its certificate unreadable.

    ``pacsfed serve`` asks before uvicorn starts: the same failure inside the app's lifespan would
    end as uvicorn's start-up traceback instead of a one-line configuration error (exit 2). The
    port is opened and closed again as :meth:`DicomFacade.start` opens it (every address of the host).
    """
    if settings.tls is not None:
        server_context(settings.tls)
    try:
        probe = await asyncio.get_running_loop().create_server(asyncio.Protocol, settings.host, settings.port)
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        raise ConfigError(f"dicom_facade: cannot listen on {where} ({exc.strerror})") from exc
    probe.close()
    await probe.wait_closed()


def caller_principals(settings: DicomFacadeSettings) -> dict[str, Principal]:
    """Each allowed calling AE as a principal (``dicom:<AE>``): its scopes and sources, like an API key."""
    return {
        ae: Principal(
            subject=f"dicom:{ae}",
            kind=PrincipalKind.SERVICE,
            scopes=frozenset(caller.scopes),
            sources=frozenset(caller.sources) if caller.sources is not None else None,
        )
        for ae, caller in settings.callers().items()
    }


class AssociationGate:
    """Admits an association when our AE is called, by an allowed AE, within ``max_associations``."""

    def __init__(self, ae_title: str, allowed: frozenset[str], max_associations: int) -> None:
        self.ae_title = ae_title
        self.allowed = allowed
        self.max_associations = max_associations
        self.open = 0

    def admit(self, request: Request) -> Rejection | None:
        """Why the association is refused (PS3.8 Table 9-21), or None when admitted (counted)."""
        if request.application_context != APPLICATION_CONTEXT:
            return Rejection.APPLICATION_CONTEXT_NOT_SUPPORTED
        if request.called_ae != self.ae_title:
            return Rejection.CALLED_AE_NOT_RECOGNIZED
        if request.calling_ae not in self.allowed:
            return Rejection.CALLING_AE_NOT_RECOGNIZED
        if self.open >= self.max_associations:
            return Rejection.LOCAL_LIMIT_EXCEEDED
        self.open += 1
        return None

    def leave(self) -> None:
        """An admitted association ended."""
        self.open -= 1


class DicomFacade:
    """pacsfed as a DICOM node: C-ECHO and C-FIND SCP on ``dicom_facade.port``."""

    def __init__(self, settings: DicomFacadeSettings, answer: Answerer) -> None:
        self.settings = settings
        self.answer = answer
        self.gate = AssociationGate(
            settings.ae_title, frozenset(settings.callers()), settings.max_associations
        )
        self.timeouts = Timeouts(artim_s=settings.artim_s, idle_s=settings.idle_timeout_s)
        self._server: asyncio.Server | None = None
        self._associations: set[AssociationProtocol] = set()

    async def start(self) -> None:
        """Listen (TLS when configured); ConfigError when a certificate cannot be loaded or the port is taken."""
        tls = server_context(self.settings.tls) if self.settings.tls is not None else None
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: AssociationProtocol(self._serve),
                self.settings.host,
                self.settings.port,
                ssl=tls,
                ssl_handshake_timeout=self.settings.artim_s if tls is not None else None,
            )
        except OSError as exc:
            where = f"{self.settings.host}:{self.settings.port}"
            raise ConfigError(f"dicom_facade: cannot listen on {where} ({exc.strerror})") from exc
        log.info(
            "DICOM facade listening as %s on port %d%s",
            self.settings.ae_title,
            self.port,
            " (DICOM TLS)" if tls is not None else "",
        )

    @property
    def port(self) -> int:
        """The port listened on (the configured one; the one given when 0 was asked, in tests)."""
        if self._server is None or not self._server.sockets:
            return self.settings.port
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, protocol: AssociationProtocol) -> None:
        self._associations.add(protocol)
        try:
            await serve_association(protocol, self.gate, self.answer, self.timeouts)
        finally:
            self._associations.discard(protocol)

    async def stop(self) -> None:
        """Stop listening and abort the associations still open (PS3.8 7.3.1)."""
        if self._server is not None:
            self._server.close()
        tasks = []
        for protocol in list(self._associations):
            protocol.abort()
            if protocol.task is not None:
                protocol.task.cancel()
                tasks.append(protocol.task)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
