"""The compactor's one setting, COMPACTION_FORMAT, read once per instance.

A settings object of its own (as examples/vad has) rather than a field of the shared
`Config`: only this function reads it, and infra/compaction.tf sets it on this function only.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping

from ..config import ConfigError

COMPACTION_FORMAT = "COMPACTION_FORMAT"


class Format(enum.Enum):
    """What a finished WAV is turned into. OFF leaves it as it is (the default product)."""

    OFF = "off"
    FLAC = "flac"  # lossless: decodes to the WAV's PCM, byte for byte
    OPUS = "opus"  # lossy, in an Ogg container: ~14x smaller for speech

    @property
    def suffix(self) -> str:
        return f".{self.value}"

    @property
    def content_type(self) -> str:
        return {Format.FLAC: "audio/flac", Format.OPUS: "audio/ogg"}[self]


@dataclasses.dataclass(frozen=True)
class Settings:
    format: Format = Format.OFF

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        raw = (environ.get(COMPACTION_FORMAT) or Format.OFF.value).strip().lower()
        try:
            return cls(format=Format(raw))
        except ValueError:
            choices = ", ".join(f.value for f in Format)
            raise ConfigError(f"{COMPACTION_FORMAT}={raw!r} must be one of {choices}") from None
