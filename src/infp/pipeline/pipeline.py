"""`InfpPipeline`: a portrait and a conversation in, a video of the portrait taking part in it out.

```
pipe = InfpPipeline.from_pretrained()                 # the bundled stage-1 and stage-2 checkpoints
portrait = pipe.prepare(read_image("me.jpg"))          # find, crop and encode the face once (rests neutral)
video = pipe(portrait, agent, partner, seed=0)         # agent/partner: 16 kHz float32 tracks
video.write("out.mp4")                                 # or: for frame in video: ...
session = pipe.stream(portrait)                        # live: push audio chunks, get frames
```

Stage 2 turns both tracks into motion latents window by window (`stream.MotionStream`); stage 1 renders
each latent from the portrait's appearance features, computed once. Offline generation is a stream fed
the whole conversation, so it holds one window of audio and frames at a time, and offline and live
output are the same frames. Given a `ConversationFile` (`pipe(portrait, ConversationFile.open(path))`)
the audio, too, is read from disk as it is needed: memory does not grow with the conversation's length.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from infp.audio.chunks import ConversationFile
from infp.audio.io import Conversation
from infp.diffusion.sampling import WindowedGenerator
from infp.errors import InfpError
from infp.models import Imitator
from infp.models.expression_space import ExpressionSpace
from infp.models.imitator import Calibration
from infp.pipeline.check import PortraitCheck, check_face
from infp.pipeline.live import MAX_FRAMES, MAX_LAG_S, LiveSession
from infp.pipeline.neutral import bundled_space, load_expression_space, rest_state
from infp.pipeline.portrait import FaceCrop, find_face
from infp.guard import LATENT_MAX, check_finite
from infp.pipeline.stages import MotionStage, load_imitator, load_motion_stage
from infp.pipeline.stream import MotionStream, StreamSession
from infp.runtime import DAMAGED, ImitatorRuntime

log = logging.getLogger("infp")
# Up to this many CPU threads, a live session renders on that many threads of one core each (on 2 cores: keeps
# up, median latency 0.52 s, against 0.79 s and 41% of the frames dropped one batch at a time on both;
# docs/generate.md). Measured on 2 cores only: with more, a window's 2 batches of 4 frames leave cores idle.
POOLED_CORES = 4


@dataclass(frozen=True, eq=False)
class Portrait:
    """A portrait ready to animate: its face crop, E_m's latent of it, its appearance features and its
    resting state (`pipeline.neutral`)."""

    face: FaceCrop
    latent: torch.Tensor  # (motion_dim,) z_src: the portrait's own motion, what the renderer moves from
    appearance: object  # infp.models.AppearanceFeatures of the crop, batch 1, on the pipeline's device
    start: torch.Tensor  # (motion_dim,) where generation starts: the neutral z_n, or z_src when kept
    calibration: Calibration | None  # the renderer's keypoints calibrated on the landmarks (None: decoded from z_src)
    check: PortraitCheck  # the photo's face: size, pose, mouth and eyes
    expression: str = "neutral"  # "neutral" or "keep"


@dataclass(frozen=True)
class Settings:
    steps: int = 20  # DDIM steps per window
    guidance: float = 3.0  # classifier-free guidance on the audio (1 = off)
    seed: int = 0
    overlap: int | None = None  # frames each window shares with (and holds from) the one before (None: the default, 60%)
    live: bool = False  # the live schedule: a window every 8 frames, 2 frames of look-ahead (diffusion.sampling)
    paste: bool = True  # paste the animated crop back into the portrait (False: the crop only)
    size: int | None = None  # output: longer side when pasting, crop side otherwise (None: see Framing)


class InfpPipeline:
    def __init__(self, imitator: Imitator, motion: MotionStage, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "float32", expression: ExpressionSpace | None = None):
        self.stage1 = ImitatorRuntime(imitator.eval(), device, dtype, batch=10)  # owns stage 1's device and dtype
        self.expression = expression  # the neutral start's expression space (None: portraits keep their own)
        self.device, self.dtype = self.stage1.device, self.stage1.dtype
        self.stage2 = MotionStage(motion.path, motion.model.eval().to(self.device), motion.diffusion, motion.featurizer)

    @property
    def imitator(self) -> Imitator:
        return self.stage1.model

    @classmethod
    def from_pretrained(cls, motion: str | Path | None = None, imitator: str | Path | None = None,
                        device: str = "auto", dtype: str = "float32", speech_model: str | Path | None = None,
                        expression: str | Path | None = None) -> InfpPipeline:
        """The two stages from checkpoint directories (default: the bundled ones). `device` "auto"
        takes the GPU when there is one. `expression`: the expression space fitted on the imitator's
        latents (default: the bundled one, where it was fitted on this imitator)."""
        from infp.data.motion import imitator_fingerprint
        from infp.pretrained import expression_dir, imitator_dir, motion_dir

        imitator_path = Path(imitator) if imitator else imitator_dir()
        model = load_imitator(imitator_path)
        fingerprint = imitator_fingerprint(imitator_path)
        stage2 = load_motion_stage(Path(motion) if motion else motion_dir(), model, fingerprint, speech_model)
        space = load_expression_space(expression, fingerprint) if expression else bundled_space(expression_dir(), fingerprint)
        pipe = cls(model, stage2, device, dtype, space)
        pipe.stage1.path = imitator_path
        return pipe

    # -- the portrait ------------------------------------------------------------------------------

    def prepare(self, image: np.ndarray, name: str = "portrait", face_index: int | None = None,
                expression: str = "neutral") -> Portrait:
        """Find the face in an RGB uint8 image of any size (several faces: pick with `face_index`),
        crop it for the renderer and encode it once. `expression` "neutral": the avatar rests with
        closed lips and open eyes whatever the photo shows; "keep": the photo's expression is its rest."""
        from infp.face.hybrid import represent

        cfg = self.imitator.cfg
        face = find_face(image, name, cfg.size, face_index)
        rep = represent(face.crop, face.points, cfg.representation)
        latent = self.stage1.encode_motion(rep[None])[0]
        appearance = self.stage1.encode_appearance(face.crop[None], None if face.full is None else face.full[None])
        rest = rest_state(self.imitator, self.expression, latent, face.points, expression)
        check = check_face(face.points, float(face.box[2]))
        return Portrait(face, latent, appearance, rest.start.to(latent), rest.calibration, check, rest.expression)

    # -- generation --------------------------------------------------------------------------------

    def motion_stream(self, portrait: Portrait, settings: Settings = Settings()) -> MotionStream:
        """Latents only, window by window (what `stream` renders)."""
        m = self.stage2
        check_finite(portrait.latent, f"stage 1 (the imitator) encoded the portrait to NaN or infinite values; {DAMAGED}")
        gen = WindowedGenerator(m.model, m.diffusion, portrait.start, None, settings.steps, settings.guidance, settings.seed,
                                settings.overlap, settings.live)
        # live, the call starts after `overlap` frames of silence: its first window ends a hop in, not 2 s in
        return MotionStream(gen, m.featurizer, context_frames=m.featurizer.context_frames,
                            preroll=gen.overlap if settings.live else 0)

    def renderer(self, portrait: Portrait, settings: Settings = Settings()):
        """latents (k, motion_dim) -> k frames: the crop at `settings.size`, or the portrait with the
        face animated in it. The renderer gives the flow and the mouth's painting; each frame is then
        sampled from the portrait once (`Framing.compose`)."""
        face = portrait.face
        framing = face.framing(settings.size) if settings.paste else face.crop_framing()
        side = settings.size or self.imitator.cfg.size

        def render(z: np.ndarray) -> list[np.ndarray]:
            check_finite(torch.as_tensor(z), f"stage 2 generated NaN, infinite or absurdly large motion latents; {DAMAGED}",
                         self.stage2.path, LATENT_MAX)
            out = []
            for p in self.stage1.paint_batches(portrait.appearance, portrait.latent, z, calibration=portrait.calibration):
                frames = framing.compose(p.flow, p.synthesis, p.mask)
                out += frames if settings.paste else [_resized(f, side) for f in frames]
            return out

        return render

    def stream(self, portrait: Portrait, **settings) -> StreamSession:
        """A live session: `push(agent_chunk, partner_chunk)` -> frames ready; `finish()` -> the rest."""
        s = Settings(**settings)
        return StreamSession(self.motion_stream(portrait, s), self.renderer(portrait, s))

    def live(self, portrait: Portrait, max_lag_s: float = MAX_LAG_S, max_frames: int = MAX_FRAMES,
             render_threads: int | None = None, **settings) -> LiveSession:
        """A live conversation on a worker thread (`pipeline.live`): `push` audio as it happens, collect
        timestamped frames; frames later than `max_lag_s` are dropped. The live schedule (a window every
        8 frames, 80 ms of look-ahead) unless `live=False` is given. `render_threads`: render threads of
        one core each, working on batches side by side while stage 2 samples the next window (None: on a
        CPU of at most `POOLED_CORES` torch threads, that many; else 1, one batch at a time on them all)."""
        s = Settings(**{"live": True, **settings})
        if render_threads is None:
            threads = torch.get_num_threads()
            render_threads = threads if self.device.type == "cpu" and threads <= POOLED_CORES else 1
        return LiveSession(self.motion_stream(portrait, s), self.renderer(portrait, s), max_lag_s, max_frames,
                           render_threads=render_threads)

    def __call__(self, portrait: Portrait, agent: np.ndarray | Conversation | ConversationFile,
                 partner: np.ndarray | None = None, **settings) -> Generation:
        """The video of `portrait` in the conversation (agent: its own voice, partner: the other's,
        16 kHz float32; or a `Conversation` / `ConversationFile` as `agent`, without `partner`), as a
        `Generation`: iterate it for frames (rendered as you go), or `.write(path)`."""
        if isinstance(agent, Conversation | ConversationFile):
            if partner is not None:
                raise InfpError("give a conversation, or the agent's and the partner's tracks, not both")
            conversation = agent
        else:
            conversation = _conversation(agent, partner)
        return Generation(self, portrait, conversation, Settings(**settings))

    def motion(self, portrait: Portrait, agent: np.ndarray, partner: np.ndarray, **settings) -> np.ndarray:
        """(T, motion_dim) latents for the whole conversation, without rendering."""
        conversation = _conversation(agent, partner)
        stream = self.motion_stream(portrait, Settings(**settings))
        parts = stream.push(conversation.agent, conversation.partner) + stream.finish()
        return np.concatenate(parts)


def _conversation(agent: np.ndarray, partner: np.ndarray) -> Conversation:
    a, p = np.asarray(agent, np.float32), np.asarray(partner, np.float32)
    if a.ndim != 1 or p.ndim != 1:
        raise InfpError(f"agent and partner must be 1-D 16 kHz tracks (got shapes {a.shape} and {p.shape})")
    n = max(len(a), len(p))
    if n == 0:
        raise InfpError("the conversation is empty (no audio samples)")
    a, p = (np.pad(t, (0, n - len(t))) for t in (a, p))  # the shorter track ends in silence
    return Conversation(a, p)


def _resized(crop: np.ndarray, side: int) -> np.ndarray:
    if crop.shape[0] != side:
        import cv2

        crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA if side < crop.shape[0] else cv2.INTER_CUBIC)
    return crop


@dataclass(frozen=True, eq=False)
class Generation:
    """A generated video, rendered as it is read: each iteration regenerates it (seeded: the same
    frames every time) holding one window at a time."""

    pipe: InfpPipeline
    portrait: Portrait
    conversation: Conversation | ConversationFile
    settings: Settings

    def __len__(self) -> int:
        return self.conversation.num_frames()

    def iter_frames(self, progress: bool = False, chunk_s: float = 2.0) -> Iterator[np.ndarray]:
        session = self.pipe.stream(self.portrait, **vars(self.settings))
        with tqdm(total=len(self), desc="generate", unit="frame", disable=not progress) as bar:
            for agent, partner in self.conversation.chunks(int(chunk_s * self.conversation.sr)):
                for f in session.push(agent, partner):
                    bar.update()
                    yield f
            for f in session.finish():
                bar.update()
                yield f

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.iter_frames()

    def frames(self) -> np.ndarray:
        """All frames as one (T, H, W, 3) uint8 array (mind the memory on long conversations)."""
        return np.stack(list(self))

    def soundtrack(self, mode: str = "mix", chunk_s: float = 2.0) -> Iterator[np.ndarray]:
        """The soundtrack in (C, n) pieces: "mix" (both voices in one channel, scaled down only if
        the sum clips) or "stereo" (agent left, partner right)."""
        if mode not in ("mix", "stereo"):
            raise ValueError(f"audio mode is 'mix' or 'stereo', not {mode!r}")
        scale = 1.0 / max(1.0, self.conversation.mix_peak)
        for agent, partner in self.conversation.chunks(int(chunk_s * self.conversation.sr)):
            yield np.stack([agent, partner]) if mode == "stereo" else ((agent + partner) * scale)[None]

    def audio(self, mode: str = "mix") -> np.ndarray:
        """The whole soundtrack, (1, N) mixed or (2, N) stereo (see `soundtrack`)."""
        return np.concatenate(list(self.soundtrack(mode)), axis=1)

    def write(self, path: str | Path, audio: str = "mix", progress: bool = False) -> Path:
        """H.264 MP4 at 25 fps with the conversation's audio; the file appears only when complete."""
        from infp.video.writer import VideoWriter

        path = Path(path)
        if not path.parent.is_dir():
            raise InfpError("the output folder does not exist", path.parent)
        with VideoWriter(path, audio=self.soundtrack(audio)) as w:
            for frame in self.iter_frames(progress):
                w.write(frame)
        return path

