"""A voice agent's side of a live call, through infp's streaming API (`InfpPipeline.live`).

Audio is pushed at the pace a call delivers it (the user's voice as the partner, the agent's voice as
its own), frames are collected as they are ready, and what a viewer would have seen is written to an
MP4: every 40-ms slot shows the newest frame delivered by then, so dropped frames show as a held
picture and the video keeps time with the agent's voice.

    python examples/live_call.py                        # the bundled portrait and conversation
    python examples/live_call.py --portrait me.png --agent agent.wav --partner user.wav --out call.mp4

Prints a line a second (frames received, their latency, frames dropped) and a summary.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np

from infp import FPS, SAMPLE_RATE
from infp.audio.io import load_conversation
from infp.data.portraits import default_portrait, read_image
from infp.pipeline import InfpPipeline
from infp.pipeline.stream import SAMPLES_PER_FRAME, paced_chunks
from infp.pretrained import demo_conversation
from infp.video import write_video


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--portrait", type=Path, default=None)
    p.add_argument("--agent", type=Path, default=None, help="the agent's voice (default: the bundled conversation)")
    p.add_argument("--partner", type=Path, default=None, help="the user's voice")
    p.add_argument("--seconds", type=float, default=20.0, help="at most this much of the conversation")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps per window (default 10, for 2 CPU cores)")
    p.add_argument("--out", type=Path, default=Path("live_call.mp4"))
    args = p.parse_args()

    conv = (load_conversation(agent=args.agent, partner=args.partner) if args.agent
            else load_conversation(demo_conversation()))
    n = min(len(conv.agent), int(args.seconds * SAMPLE_RATE))
    agent, partner = conv.agent[:n], conv.partner[:n]
    name, image = (args.portrait.stem, read_image(args.portrait)) if args.portrait else default_portrait()

    pipe = InfpPipeline.from_pretrained(dtype="auto")  # bfloat16 rendering where the CPU has it natively
    portrait = pipe.prepare(image, name)
    session = pipe.live(portrait, steps=args.steps, paste=False, size=384)

    received = []
    def reader() -> None:  # a viewer: takes frames as they come
        while (frame := session.get(timeout=5.0)) is not None:
            received.append(frame)

    viewer = threading.Thread(target=reader)
    viewer.start()
    start, last = time.perf_counter(), 0
    for a, b in paced_chunks(agent, partner, 0.04):
        session.push(a, b)
        if (second := int(time.perf_counter() - start)) > last:
            last, s = second, session.stats
            recent = [f.latency_s for f in received[-FPS:]]
            print(f"{second:4d} s  frames {s.frames:5d}  dropped {s.dropped_late:4d}  latency "
                  f"{np.median(recent) if recent else float('nan'):.2f} s  lag {s.lag_s:.2f} s", flush=True)
    session.close()
    viewer.join()

    lat = np.array([f.latency_s for f in received])
    s = session.stats
    print(f"{len(received)} frames received of {-(-n // SAMPLES_PER_FRAME)}, {s.dropped_late} dropped late; latency "
          f"median {np.median(lat):.2f} s, p95 {np.percentile(lat, 95):.2f} s, max {lat.max():.2f} s")
    by_index = {f.index: f.image for f in received}
    shown, frames = received[0].image, []
    for i in range(-(-n // SAMPLES_PER_FRAME)):
        shown = by_index.get(i, shown)
        frames.append(shown)
    write_video(args.out, frames, audio=np.stack([agent, partner]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
