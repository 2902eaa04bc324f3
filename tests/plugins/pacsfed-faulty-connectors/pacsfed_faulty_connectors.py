"""A connector kind that checks its settings when built, and refuses an odd ``shelf``."""

from __future__ import annotations

from typing import Literal

from connectors.base import Connector, ConnectorContext, SourceAnswer
from federation.models import Deadline, StudyQuery
from federation.settings import SourceSettings


class PickySourceSettings(SourceSettings):
    """The common source keys plus ``shelf``."""

    kind: Literal["picky"]
    shelf: int = 2


class PickyConnector(Connector):
    """Answers nothing; refuses to be built on an odd shelf."""

    kind = "picky"
    settings_model = PickySourceSettings
    supports_series_query = True

    def __init__(self, settings: PickySourceSettings, context: ConnectorContext) -> None:
        if settings.shelf % 2:
            raise ValueError("the shelf must be even")
        super().__init__(settings, context)

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        """Nothing, ever."""
        return SourceAnswer(records=())

    async def ping(self, deadline: Deadline) -> None:
        """Always there."""
