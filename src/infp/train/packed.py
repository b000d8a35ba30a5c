"""Packed renderer data: clips reduced to what a renderer fine-tune with a frozen `E_m` needs.

With `E_m` frozen (the motion latent space a stage-2 model was trained on stays as it is), the
motion latent of every frame is fixed, so it is computed once here instead of drawing the hybrid
representation and running `E_m` for every pair at every step. What is left per frame is the face
crop, its latent (and that of the mirrored crop, for the flip augmentation), its clip and its mouth
and eyes' opening. A pack is a folder:

    frames.mp4          every usable frame of every clip, in order, H.264 (yuv444, `crf`)
    index.safetensors   z (N, D), z_mirror (N, D) float16, clip (N,) int32, mouth (N,), eye (N,), real (N,) bool
    pack.json           the clips, sizes and the fingerprint of the E_m the latents belong to

It is small enough to carry to a GPU machine (19,854 frames at 256 px, CRF 23: 16.6 MB), decodes
with OpenCV alone and needs neither MediaPipe nor PyAV there (`PackedPairs`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from infp.errors import InfpError

log = logging.getLogger(__name__)
FRAMES, INDEX, META = "frames.mp4", "index.safetensors", "pack.json"


def pack_clips(clips, imitator, out: Path, fingerprint: str, crf: int = 18, every: int = 1, batch: int = 64,
               progress: bool = True) -> dict:
    """Write a pack of `clips` (list of `data.pairs.ClipFrames` at the imitator's size) to `out`;
    `fingerprint`: the imitator's (`data.motion.imitator_fingerprint`), recorded with the latents,
    which only mean something with the E_m that made them. `every`: keep every k-th usable frame.
    Returns the pack's description."""
    import av
    from tqdm import tqdm

    from infp.face.expression import eye_opening, mouth_opening
    from infp.face.hybrid import represent
    from infp.runtime import ImitatorRuntime

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = imitator.cfg.size
    rt = ImitatorRuntime(imitator, batch=batch)
    zs, zms, clip_ids, mouths, eyes, real, names = [], [], [], [], [], [], []
    container = av.open(str(out / FRAMES), "w")
    stream = container.add_stream("libx264", rate=25)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv444p"  # no chroma subsampling: lips and eyes keep their colour edges
    stream.options = {"crf": str(crf), "preset": "medium"}
    total = sum(len(c.usable[::every]) for c in clips)
    bar = tqdm(total=total, unit="frame", desc="pack", disable=not progress)
    for k, c in enumerate(clips):
        idx = c.usable[::every]
        mouth = mouth_opening(c.points)[idx]
        eye = eye_opening(c.points.astype(np.float64))[idx]
        for s in range(0, len(idx), batch):
            part = idx[s : s + batch]
            reps = np.stack([represent(c.frames[i], c.points[i], imitator.cfg.representation) for i in part])
            zs.append(rt.encode_motion(reps).cpu())
            zms.append(rt.encode_motion(reps[:, :, ::-1]).cpu())  # the mirrored crops
            for i in part:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(c.frames[i]), format="rgb24")):
                    container.mux(packet)
            bar.update(len(part))
        clip_ids.append(np.full(len(idx), k))
        mouths.append(mouth.astype(np.float32))
        eyes.append(eye.astype(np.float32))
        real.append(np.full(len(idx), c.kind == "real"))
        names.append(c.id)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    bar.close()
    # float16 latents: E_m's spread per dimension is 0.03-0.3, far above float16's steps there
    save_file({"z": torch.cat(zs).half().contiguous(), "z_mirror": torch.cat(zms).half().contiguous(),
               "clip": torch.from_numpy(np.concatenate(clip_ids)).int(),
               "mouth": torch.from_numpy(np.nan_to_num(np.concatenate(mouths))),
               "eye": torch.from_numpy(np.nan_to_num(np.concatenate(eyes))),
               "real": torch.from_numpy(np.concatenate(real))}, str(out / INDEX))
    meta = {"size": size, "frames": total, "clips": names, "every": every, "crf": crf,
            "imitator_fingerprint": fingerprint}
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def decode_frames(path: Path, n: int, size: int) -> np.ndarray:
    """(n, size, size, 3) uint8 RGB frames of a pack's video, with OpenCV (present on GPU machines)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        ok, f = cap.read()
        if not ok:
            raise InfpError(f"the pack's video ends after {i} of {n} frames", path)
        frames[i] = f[..., ::-1]
    cap.release()
    return frames


class PackedBatch(NamedTuple):
    source: torch.Tensor  # (B, 3, S, S) in [0, 1]
    driving: torch.Tensor  # (B, 3, S, S) the target
    z_source: torch.Tensor  # (B, D)
    z_driving: torch.Tensor  # (B, D)


@dataclass
class PackedPairs:
    """A pack in memory (on any device); draws (source, driving) pairs from one clip, flips half of
    them (with the mirrored crops' latents) and, with `mouth_pairs` q, draws a share q of the
    driving frames for a mouth unlike the source's (as `data.pairs.PairSampler`), with `eye_pairs`
    a share for eyes unlike the source's (`data.pairs.draw_pair`; needs a pack with the eyes' opening)."""

    frames: torch.Tensor  # (N, 3, S, S) uint8
    z: torch.Tensor  # (N, D)
    z_mirror: torch.Tensor
    clip: np.ndarray  # (N,)
    mouth: np.ndarray  # (N,)
    real: np.ndarray  # (N,) bool
    real_fraction: float = 0.5
    mouth_pairs: float = 0.0
    eye: np.ndarray | None = None  # (N,); None: a pack written before the eyes were measured
    eye_pairs: float = 0.0

    @classmethod
    def load(cls, folder: Path, device: str | torch.device = "cpu", **kw) -> PackedPairs:
        folder = Path(folder)
        meta = json.loads((folder / META).read_text())
        index = load_file(str(folder / INDEX))
        frames = decode_frames(folder / FRAMES, meta["frames"], meta["size"])
        return cls(torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous().to(device),
                   index["z"].float().to(device), index["z_mirror"].float().to(device), index["clip"].numpy(),
                   index["mouth"].numpy(), index["real"].numpy(), **kw,
                   eye=index["eye"].numpy() if "eye" in index else None)

    def __post_init__(self) -> None:
        from infp.data.pairs import clip_probabilities  # imported here: data.pairs loads MediaPipe at import

        ids = np.unique(self.clip)
        self.members = [np.where(self.clip == k)[0] for k in ids]
        real = np.array([self.real[m[0]] for m in self.members])
        if self.eye_pairs > 0 and self.eye is None:
            raise InfpError("--eye-pairs needs a pack with the eyes' opening: pack it again with this version")
        self.p = clip_probabilities(np.array([len(m) for m in self.members]), real, self.real_fraction)

    def pair(self, rng: np.random.Generator) -> tuple[int, int]:
        from infp.data.pairs import draw_pair

        return draw_pair(rng, self.members[rng.choice(len(self.members), p=self.p)], self.mouth, self.mouth_pairs,
                         self.eye, self.eye_pairs)

    def sample(self, rng: np.random.Generator, batch: int) -> PackedBatch:
        pairs = np.array([self.pair(rng) for _ in range(batch)])  # (B, 2)
        flip = torch.as_tensor(rng.random(batch) < 0.5, device=self.z.device)
        i, j = (torch.as_tensor(pairs[:, c], device=self.z.device) for c in (0, 1))

        def image(k: torch.Tensor) -> torch.Tensor:
            x = self.frames[k].float().div_(255)  # (B, 3, S, S)
            return torch.where(flip[:, None, None, None], x.flip(-1), x)

        def latent(k: torch.Tensor) -> torch.Tensor:
            return torch.where(flip[:, None], self.z_mirror[k], self.z[k])

        return PackedBatch(image(i), image(j), latent(i), latent(j))
