"""Voices for synthetic conversations: espeak-ng speakers and real speech spliced from a folder.

Each source returns 16 kHz mono float32 utterances trimmed of leading/trailing silence and levelled
to a common loudness, so the behaviour model can read mouth opening straight off the energy.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from infp import SAMPLE_RATE
from infp.audio.io import load_mono
from infp.audio.vad import segments, voice_activity
from infp.errors import InfpError, MediaError

log = logging.getLogger(__name__)

WORDS = (
    "the a we you they it this that there here time day people way year thing world life hand part "
    "place case week work number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father power "
    "hour game line end member law car city community name president team minute idea kid body "
    "information back parent face others level office door health person art war history party "
    "result change morning reason research girl guy moment air teacher force education think know "
    "want tell ask work seem feel try leave call keep let begin help talk turn start show hear play "
    "run move like live believe hold bring happen write provide sit stand lose pay meet include "
    "continue learn lead understand watch follow stop create speak read spend grow open walk win "
    "really actually maybe probably quite very always never often today tomorrow yesterday again "
    "good new first last long great little own other old big high different small large next early "
    "young important few public bad same able and but so because if when while although"
).split()
BACKCHANNELS = ("mm-hm", "yeah", "right", "uh-huh", "okay", "I see", "sure", "mhm", "oh really", "yes")
ESPEAK_LANGS = ("en-us", "en-gb", "en-us", "en-gb-scotland", "de", "fr", "es", "it")
ESPEAK_VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6)) + ("klatt", "klatt2")
TARGET_RMS_DB = -20.0  # speech level of every utterance before per-speaker gain


def trim_and_level(x: np.ndarray, gain_db: float = 0.0, floor_db: float = -45.0) -> np.ndarray:
    """Cut leading/trailing silence (10 ms frames below `floor_db` of the peak) and set the RMS."""
    hop = SAMPLE_RATE // 100
    n = len(x) // hop
    if n == 0:
        return x.astype(np.float32)
    e = 20 * np.log10(np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(1)) + 1e-9)
    on = np.where(e > e.max() + floor_db)[0]
    x = x[on[0] * hop : (on[-1] + 1) * hop] if len(on) else x[:0]
    rms = np.sqrt((x**2).mean()) if len(x) else 0.0
    if rms > 0:
        x = x * (10 ** ((TARGET_RMS_DB + gain_db) / 20) / rms)
    return np.clip(x, -1, 1).astype(np.float32)


@dataclass(frozen=True)
class EspeakVoice:
    """One espeak-ng speaker: language+variant, pitch 0-99, speed in words per minute."""

    voice: str
    pitch: int
    speed: int

    @staticmethod
    def random(rng: np.random.Generator, languages: tuple[str, ...] = ESPEAK_LANGS) -> EspeakVoice:
        lang = languages[rng.integers(len(languages))]
        variant = ESPEAK_VARIANTS[rng.integers(len(ESPEAK_VARIANTS))]
        return EspeakVoice(f"{lang}+{variant}", int(rng.integers(25, 80)), int(rng.integers(140, 200)))

    def say(self, text: str) -> np.ndarray:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise InfpError("espeak-ng is not installed (apt-get install espeak-ng), or pass real speech with --speech DIR")
        # the text goes in on stdin: as an argument, a text starting with "-" would be read as options
        # (e.g. "-w FILE" writes a file), and `infp call` speaks what a visitor types
        cmd = [exe, "-v", self.voice, "-p", str(self.pitch), "-s", str(self.speed), "--stdout", "--stdin"]
        wav = subprocess.run(cmd, input=text.encode(), capture_output=True, check=True).stdout
        # espeak-ng writes a 22.05 kHz 16-bit mono WAV; its header's size fields are unset on a
        # pipe, so read the samples after the 44-byte header directly.
        x = np.frombuffer(wav[44 : 44 + (len(wav) - 44) // 2 * 2], dtype="<i2").astype(np.float32) / 32768
        return soxr.resample(x, 22050, SAMPLE_RATE).astype(np.float32)


def check_languages(languages: tuple[str, ...]) -> None:
    """InfpError naming the languages espeak-ng does not have (e.g. a typo in `infp synth --languages`)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise InfpError("espeak-ng is not installed (apt-get install espeak-ng)")
    rows = subprocess.run([exe, "--voices"], capture_output=True, text=True, check=True).stdout.splitlines()[1:]
    known = {r.split()[1] for r in rows if len(r.split()) > 1}
    missing = [x for x in languages if x not in known]
    if missing:
        raise InfpError(f"espeak-ng has no language {', '.join(missing)} (see `espeak-ng --voices`)")


def random_sentence(rng: np.random.Generator) -> str:
    return " ".join(WORDS[i] for i in rng.integers(len(WORDS), size=int(rng.integers(4, 14))))


class SpeechBank:
    """Utterances cut at pauses out of real speech files (any format), for splicing into turns."""

    def __init__(self, folder: str | Path, min_s: float = 0.8, max_s: float = 6.0):
        folder = Path(folder)
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus"})
        if not files:
            raise InfpError("no audio files (.wav .flac .mp3 .ogg .m4a .opus) in the speech folder", folder)
        self.files = files
        self.clips: list[np.ndarray] = []
        self.voice_of: list[int] = []  # which file (taken as one speaker) each clip came from
        for k, f in enumerate(files):
            try:
                x = load_mono(f)
            except MediaError as e:
                log.warning("skipping speech file: %s", e)
                continue
            for a, b in segments(voice_activity(x, min_silence_s=0.25)):
                while b - a >= min_s:
                    end = min(b, a + max_s)
                    self.clips.append(x[int(a * SAMPLE_RATE) : int(end * SAMPLE_RATE)])
                    self.voice_of.append(k)
                    a = end
        if not self.clips:
            raise InfpError("no speech found in the speech folder", folder)
        log.info("speech bank: %d utterances from %d files in %s", len(self.clips), len(files), folder)

    @property
    def voices(self) -> list[int]:
        return sorted(set(self.voice_of))

    def sample(self, rng: np.random.Generator, voice: int | None = None) -> np.ndarray:
        """One utterance (of file `voice`, or any), varied: speed/pitch (resampling by 0.88-1.14)
        and added noise."""
        pool = [i for i, v in enumerate(self.voice_of) if voice is None or v == voice]
        x = self.clips[pool[rng.integers(len(pool))]]
        factor = rng.uniform(0.88, 1.14)
        x = soxr.resample(x, SAMPLE_RATE, int(SAMPLE_RATE / factor)).astype(np.float32)
        noise = rng.normal(0, 1, len(x)).astype(np.float32) * np.sqrt((x**2).mean()) * 10 ** (-rng.uniform(25, 45) / 20)
        return x + noise


@dataclass
class Speaker:
    """One side of a conversation: an espeak voice, optionally real speech for its sentences."""

    voice: EspeakVoice
    gain_db: float
    bank: SpeechBank | None = None
    bank_voice: int | None = None  # the speech file this speaker's sentences come from

    def sentence(self, rng: np.random.Generator) -> np.ndarray:
        if self.bank is not None:
            x = self.bank.sample(rng, self.bank_voice)
        else:
            x = self.voice.say(random_sentence(rng))
        return trim_and_level(x, self.gain_db)

    def backchannel(self, rng: np.random.Generator) -> np.ndarray:
        text = BACKCHANNELS[rng.integers(len(BACKCHANNELS))]
        return trim_and_level(self.voice.say(text), self.gain_db - 4.0)  # backchannels are quieter
