"""A reader of the Dockerfile instructions deploy/docker/Dockerfile uses: stages, and each one's instructions."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

__all__ = ["Instruction", "Stage", "parse", "words"]


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword (upper case) and the rest of its (joined) line."""

    keyword: str
    value: str


@dataclasses.dataclass
class Stage:
    """One ``FROM`` and the instructions after it."""

    base: str
    name: str | None
    instructions: list[Instruction] = dataclasses.field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """The values of every instruction with this keyword, in order."""
        return [i.value for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str | None:
        """The value of the last instruction with this keyword (the one that counts for CMD, USER...)."""
        values = self.all(keyword)
        return values[-1] if values else None


def words(value: str) -> list[str]:
    """An exec-form (JSON array) or shell-form value as its words."""
    return json.loads(value) if value.startswith("[") else shlex.split(value)


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """The global ``ARG`` defaults and the stages, with ``${ARG}`` in ``FROM`` replaced by its default."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), re.sub(r"\s+", " ", value.strip())
        if keyword == "FROM":
            base, *rest = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value).split()
            stages.append(Stage(base, rest[1] if len(rest) == 2 and rest[0].upper() == "AS" else None))
        elif not stages and keyword == "ARG":
            name, _, default = value.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, value))
    return args, stages
