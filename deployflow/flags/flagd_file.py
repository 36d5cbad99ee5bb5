"""Feature flags kept in a flagd flag-definition file (the OpenFeature flagd format).

Services read the file in-process (``openfeature-sdk`` with ``openfeature-provider-flagd`` in its
file mode) and see a change as soon as the file is replaced. deployflow owns only the flags it
releases: each is a boolean flag with ``on`` and ``off`` variants whose share of ``on`` is set by
flagd's ``fractional`` targeting, which buckets users by a stable targeting key (the same user
keeps the same variant as the share grows). Other flags in the file are kept as they are. Every
write goes to a temporary file in the same folder and is renamed over the old one, so a reader
never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from deployflow.providers.base import BackendError
from deployflow.spec_types import StrictModel

SCHEMA = "https://flagd.dev/schema/v0/flags.json"


class FlagdFileSpec(StrictModel):
    """A flagd flag-definition JSON file on the machines of the service."""

    spec_relative_paths: ClassVar[tuple[str, ...]] = ("path",)

    kind: Literal["flagd-file"] = Field(description="flagd flag-definition file.")
    path: Path = Field(description="The JSON file the service's flagd provider reads.")


def flag_definition(percent: int) -> dict[str, Any]:
    """The flagd definition of a boolean flag that is ``on`` for ``percent`` of users."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ValueError(f"percent must be an integer 0..100, got {percent!r}")
    definition: dict[str, Any] = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "on" if percent == 100 else "off",
    }
    if 0 < percent < 100:
        definition["targeting"] = {"fractional": [["on", percent], ["off", 100 - percent]]}
    return definition


def rollout_of(definition: Any) -> int | None:
    """The percent of users a definition written by ``flag_definition`` gives ``on``; None when
    the definition is not one of ours."""
    if not isinstance(definition, dict):
        return None
    if definition.get("state") == "DISABLED":
        return 0
    targeting = definition.get("targeting")
    if isinstance(targeting, dict) and "fractional" in targeting:
        for bucket in targeting["fractional"]:
            if isinstance(bucket, list) and len(bucket) == 2 and bucket[0] == "on":
                return int(bucket[1])
        return None
    if definition.get("defaultVariant") == "on":
        return 100
    if definition.get("defaultVariant") == "off":
        return 0
    return None


class FlagdFileProvider:
    """Flags in a flagd file, changed atomically (temporary file and rename)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @classmethod
    def from_spec(cls, spec: FlagdFileSpec) -> FlagdFileProvider:
        return cls(spec.path)

    def describe(self) -> str:
        return f"flagd file {self.path}"

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"$schema": SCHEMA, "flags": {}}
        except OSError as exc:
            raise BackendError(f"{self.describe()}: cannot read: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BackendError(f"{self.describe()}: not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("flags", {}), dict):
            raise BackendError(f"{self.describe()}: not a flagd file (no 'flags' mapping)")
        data.setdefault("flags", {})
        return data

    def _write(self, data: dict[str, Any]) -> None:
        folder = self.path.parent
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=folder)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(data, handle, indent=2, sort_keys=True)
                    handle.write("\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(temporary, 0o644)  # mkstemp makes it 0600; the service must read it
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise BackendError(f"{self.describe()}: cannot write: {exc.strerror}") from None

    def set_rollout(self, flag: str, percent: int) -> None:
        definition = flag_definition(percent)
        data = self._read()
        data["flags"][flag] = definition
        self._write(data)

    def rollout(self, flag: str) -> int | None:
        return rollout_of(self._read()["flags"].get(flag))
