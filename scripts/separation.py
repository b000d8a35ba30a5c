"""How well `infp preprocess --layout side-by-side` tells who speaks, against known truth (issue 23).

    python scripts/separation.py --out ~/runs/separation [--count 10] [--seconds 20] \
        [--portraits ../shared/data/portraits] [--speech ../shared/data/audio] [--real VIDEO ...]

Synthetic: `--count` conversations between two portraits side by side (`data.synth.synth_side_by_side`:
the behaviour model moves both faces, one mixed track), the truth being the conversation's schedule.
Real (`--real`): side-by-side recordings where only the left person speaks (ViCo's speaker | listener
panels in ../shared/data/listening), the truth being the mixed track's speech, all the left person's.
Each recording goes through the preprocessor's own reading (`data.preprocess.read_two_people`); the
scores (`data.separation.score`) are printed per recording and pooled, and saved to OUT/separation.json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from infp.data.portraits import load_portraits
from infp.data.preprocess import read_two_people
from infp.data.separation import score
from infp.data.speech import SpeechBank
from infp.data.synth import SynthConfig, synth_side_by_side

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def synthetic(args) -> list[tuple[str, np.ndarray, np.ndarray]]:
    faces = load_portraits(args.portraits, args.size)
    bank = SpeechBank(args.speech) if args.speech else None
    cfg = SynthConfig(seconds=args.seconds, size=args.size)
    out = []
    for i in range(args.count):
        rng = np.random.default_rng([args.seed, i])
        a, b = rng.choice(len(faces), 2, replace=False)
        path = args.out / f"dyad_{i:03d}.mp4"
        truth = synth_side_by_side(path, (faces[a], faces[b]), args.seed * 1000 + i, cfg, bank)
        out.append((f"{path.name} ({faces[a].name} | {faces[b].name})", read_two_people(path).speaks, truth))
    return out


def real(videos: list[Path]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for path in videos:
        two = read_two_people(path)
        out.append((path.name, two.speaks, np.stack([two.speech, np.zeros_like(two.speech)], 1)))
    return out


def report(name: str, rows: list[tuple[str, np.ndarray, np.ndarray]]) -> dict:
    for label, pred, truth in rows:
        print(f"{name} {label}: {score(pred, truth).line()}")
    n = [min(len(p), len(t)) for _, p, t in rows]
    pooled = score(np.concatenate([p[:k] for (_, p, _), k in zip(rows, n)]),
                   np.concatenate([t[:k] for (_, _, t), k in zip(rows, n)]))
    print(f"{name}, pooled over {len(rows)}: {pooled.line()}")
    return {"pooled": asdict(pooled), "recordings": {label: asdict(score(p, t)) for label, p, t in rows}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the synthetic recordings and separation.json")
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--size", type=int, default=256, help="each person's half is size x size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--portraits", type=Path, default=SHARED / "portraits")
    ap.add_argument("--speech", default=str(SHARED / "audio"), help="real speech spliced into turns ('' for espeak-ng only)")
    ap.add_argument("--real", type=Path, nargs="*", default=sorted((SHARED / "listening").glob("vico-*.mp4")))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    if args.count:
        results["synthetic"] = report("synthetic", synthetic(args))
    if args.real:
        results["real"] = report("real", real(args.real))
    (args.out / "separation.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
