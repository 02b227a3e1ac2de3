"""The audio a simulated device sends, read from a WAV file: PCM16 mono, any sample rate."""

from __future__ import annotations

import wave
from pathlib import Path

from omi_receiver.devtools.simulate.options import UsageError
from omi_receiver.runtime.contract import BYTES_PER_SAMPLE


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """(PCM16 LE mono bytes, sample_rate) of a WAV file; UsageError for anything else."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width = wav.getnchannels(), wav.getsampwidth()
            if wav.getcomptype() != "NONE":
                raise UsageError(f"{path}: compressed WAV ({wav.getcompname()}); need PCM16")
            if width != BYTES_PER_SAMPLE:
                raise UsageError(f"{path}: {8 * width}-bit samples; need 16-bit PCM")
            if channels != 1:
                raise UsageError(f"{path}: {channels} channels; need mono")
            return wav.readframes(wav.getnframes()), wav.getframerate()
    except UsageError:
        raise
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no such file") from exc
    except (wave.Error, EOFError) as exc:
        # wave only reads WAVE_FORMAT_PCM; float, A-law, extensible etc. land here.
        raise UsageError(f"{path}: not a PCM16 mono WAV file ({exc})") from exc
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc})") from exc
