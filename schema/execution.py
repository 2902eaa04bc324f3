"""Options for graphql-core's ``execute`` that every front end passes: a cheaper awaitable check."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from graphql.pyutils import is_awaitable as default_is_awaitable
from pydantic import BaseModel

_NEVER_AWAITABLE = (str, int, float, type(None), list, tuple, dict, enum.Enum, dt.date, dt.time, BaseModel)
"""Types of the values our resolvers return that are never awaitable (bool is an int)."""


def is_awaitable(value: Any) -> bool:
    """graphql-core's test, answered at once for plain values and pydantic models.

    graphql-core asks it of every value in a result. Its own ends in ``hasattr(value,
    "__await__")``, which on a pydantic model goes through the model's ``__getattr__`` and a
    raised AttributeError: 2.8 µs a model here, against 0.1 µs for a string.
    """
    return not isinstance(value, _NEVER_AWAITABLE) and default_is_awaitable(value)
