"""The live session (`pipeline.live`): frames in order with their audio, equal to offline generation when
nothing is late; late frames dropped and counted while the motion stays continuous; a slow reader loses
the oldest frames, not memory; errors reach the caller (tiny models)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from infp import SAMPLE_RATE
from infp.pipeline import InfpPipeline, Settings
from infp.pipeline.live import LiveSession
from infp.pipeline.stream import SAMPLES_PER_FRAME, paced_chunks


def _tracks(seconds: float = 3.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    voice = 0.2 * rng.normal(size=(2, n)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    return (voice[0] * (t < 1.5)).astype(np.float32), (voice[1] * (t >= 1.6)).astype(np.float32)


def _push_all(session: LiveSession, agent, partner, chunk: int = 640) -> list:
    frames = []
    for k in range(0, len(agent), chunk):
        session.push(agent[k : k + chunk], partner[k : k + chunk])
        frames += session.frames()
    return frames + session.close()


def test_live_frames_equal_offline_with_their_audio(pipe, portrait):
    agent, partner = _tracks()
    settings = {"seed": 3, "steps": 3, "paste": False}
    frames = _push_all(pipe.live(portrait, max_lag_s=1e9, max_frames=10**6, **settings), agent, partner)
    n = -(-len(agent) // SAMPLES_PER_FRAME)
    assert [f.index for f in frames] == list(range(n))
    offline = list(pipe(portrait, agent, partner, live=True, **settings))
    assert len(offline) == n
    for f, o in zip(frames, offline, strict=True):
        np.testing.assert_array_equal(f.image, o)
    # each frame carries the agent's voice of its 40-ms slot; the last, partial one padded with silence
    np.testing.assert_array_equal(frames[5].agent_audio, agent[5 * SAMPLES_PER_FRAME : 6 * SAMPLES_PER_FRAME])
    assert all(f.agent_audio.shape == (SAMPLES_PER_FRAME,) for f in frames)
    assert frames[7].time_s == pytest.approx(0.28)
    assert all(f.latency_s >= 0 for f in frames)


def test_late_frames_are_dropped_and_the_motion_goes_on(pipe, portrait):
    agent, partner = _tracks(4.0)
    s = Settings(seed=3, steps=2, paste=False, live=True)
    render = pipe.renderer(portrait, s)

    def slow(z):  # a renderer that takes 60 ms a frame: 1.5 times too slow for 25 frames/s
        time.sleep(0.06 * len(z))
        return render(z)

    session = LiveSession(pipe.motion_stream(portrait, s), slow, max_lag_s=0.3)
    frames = []
    for a, p in paced_chunks(agent, partner, 0.04):
        session.push(a, p)
        frames += session.frames()
    frames += session.close()
    st = session.stats
    n = -(-len(agent) // SAMPLES_PER_FRAME)
    assert st.dropped_late > 0 and st.frames + st.dropped_late == n == len(frames) + st.dropped_late
    idx = [f.index for f in frames]
    assert idx == sorted(idx) and idx[-1] == n - 1, "frames stay in order and reach the end of the call"
    # what is rendered is on time (the budget plus one window's rendering), however long the call
    assert max(f.latency_s for f in frames) < 0.3 + 0.06 * 10 + 0.5


def test_a_slow_reader_loses_the_oldest_frames(pipe, portrait):
    agent, partner = _tracks()
    session = pipe.live(portrait, max_lag_s=1e9, max_frames=4, seed=0, steps=2, paste=False)
    for k in range(0, len(agent), 3200):
        session.push(agent[k : k + 3200], partner[k : k + 3200])  # nobody reads
    frames = session.close()
    n = -(-len(agent) // SAMPLES_PER_FRAME)
    assert [f.index for f in frames] == list(range(n - 4, n))
    assert session.stats.dropped_unread == n - 4 and session.stats.frames == n


def test_errors_reach_the_caller(pipe, portrait):
    s = Settings(steps=2, paste=False, live=True)

    def broken(z):
        raise RuntimeError("renderer failed")

    agent, partner = _tracks(2.5)
    session = LiveSession(pipe.motion_stream(portrait, s), broken)
    with pytest.raises(RuntimeError, match="renderer failed"):
        _push_all(session, agent, partner)
    with pytest.raises(ValueError, match="equal-length"):
        pipe.live(portrait, steps=2).push(agent[:100], partner[:50])
    closed = pipe.live(portrait, steps=2)
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.push(agent[:100], partner[:100])


def test_the_live_schedule_starts_a_hop_into_the_call(pipe, portrait):
    """The pre-roll of silence: the first frames come once a hop, the look-ahead and one frame of audio
    have arrived, not a whole window; the offline schedule still waits for its first window."""
    agent, partner = _tracks(3.0)
    live = pipe.motion_stream(portrait, Settings(steps=2, live=True))
    cfg = pipe.stage2.model.cfg
    gen = live.gen
    hop = cfg.window - gen.overlap - gen.lookahead
    wait = (hop + gen.lookahead + 1) * SAMPLES_PER_FRAME
    assert live.push(agent[: wait - 1], partner[: wait - 1]) == []
    got = live.push(agent[wait - 1 : wait], partner[wait - 1 : wait])
    assert sum(len(z) for z in got) == hop and live.frames_ready == hop
    offline = pipe.motion_stream(portrait, Settings(steps=2))
    assert offline.push(agent[:wait], partner[:wait]) == []


def test_example_live_call_runs(tmp_path, tiny_models, monkeypatch):
    """examples/live_call.py end to end on the tiny models: a summary line and an MP4 that keeps time."""
    import runpy
    import sys

    from infp.video import probe

    real = InfpPipeline.from_pretrained
    monkeypatch.setattr(InfpPipeline, "from_pretrained",
                        classmethod(lambda cls, *a, **k: real(tiny_models / "m", tiny_models / "imi", device="cpu")))
    out = tmp_path / "call.mp4"
    monkeypatch.setattr(sys, "argv", ["live_call.py", "--seconds", "2", "--steps", "2", "--out", str(out)])
    runpy.run_path(str(Path(__file__).parents[1] / "examples" / "live_call.py"), run_name="__main__")
    info = probe(out)
    assert info.n_frames == 50 and out.stat().st_size > 0


def test_memory_is_flat_over_twenty_sessions_in_a_row(pipe, portrait):
    """Each session's worker, queues and audio go with it: 20 calls in a row leave memory where two left it."""
    import gc

    from infp.eval.bench import resident_mb

    agent, partner = _tracks(2.0)

    def one_call():
        session = pipe.live(portrait, steps=2, paste=False)
        for k in range(0, len(agent), 3200):
            session.push(agent[k : k + 3200], partner[k : k + 3200])
        session.close()
        assert not session._worker.is_alive()

    for _ in range(2):
        one_call()
    gc.collect()
    before = resident_mb()
    for _ in range(20):
        one_call()
    gc.collect()
    assert resident_mb() - before < 20, f"{before:.0f} -> {resident_mb():.0f} MB"


def test_frames_are_handed_out_a_render_batch_at_a_time(pipe, portrait):
    """A window's first frames are ready (and readable) before its last ones are rendered: the reader
    sees each batch of `render_batch` frames while the worker renders the next."""
    s = Settings(seed=0, steps=2, paste=False, live=True)
    render = pipe.renderer(portrait, s)
    seen = []  # frames the reader could collect when each render call began

    session = None

    def watched(z):
        seen.append((len(z), session.stats.frames))
        return render(z)

    session = LiveSession(pipe.motion_stream(portrait, s), watched, max_lag_s=1e9, render_batch=3)
    agent, partner = _tracks(2.0)
    frames = _push_all(session, agent, partner)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(k <= 3 for k, _ in seen)
    delivered = [n for _, n in seen]
    assert delivered == sorted(delivered) and len(set(delivered)) == len(delivered), \
        "every render call starts after the previous batch was handed out"
    assert sum(k for k, _ in seen) == len(frames)
    with pytest.raises(ValueError, match="render_batch"):
        LiveSession(pipe.motion_stream(portrait, s), render, render_batch=0)


def test_render_threads_render_batches_side_by_side_in_order(pipe, portrait):
    """With render threads, batches render at the same time (on threads of their own) and the frames still
    come out in order, equal to one batch at a time; torch's thread count is left as it was."""
    import threading

    import torch

    s = Settings(seed=0, steps=2, paste=False, live=True)
    render = pipe.renderer(portrait, s)
    lock, busy, most = threading.Lock(), [0], [0]

    def slow(z):  # long enough that two batches handed out together overlap
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(0.05)
        try:
            return render(z)
        finally:
            with lock:
                busy[0] -= 1

    agent, partner = _tracks(2.5)
    before = torch.get_num_threads()
    pooled = _push_all(LiveSession(pipe.motion_stream(portrait, s), slow, max_lag_s=1e9, max_frames=10**6,
                                 render_threads=2), agent, partner)
    one = _push_all(LiveSession(pipe.motion_stream(portrait, s), render, max_lag_s=1e9, max_frames=10**6), agent, partner)
    assert most[0] == 2
    assert [f.index for f in pooled] == [f.index for f in one] == list(range(len(one)))
    for a, b in zip(pooled, one, strict=True):
        np.testing.assert_allclose(a.image, b.image, atol=2)  # one core or two: float rounding only
        np.testing.assert_array_equal(a.agent_audio, b.agent_audio)
    assert torch.get_num_threads() == before
    new_thread = []
    t = threading.Thread(target=lambda: new_thread.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert new_thread == [before], "threads started later get the caller's count, not the render threads' 1"
    with pytest.raises(ValueError, match="render_threads"):
        LiveSession(pipe.motion_stream(portrait, s), render, render_threads=0)


def test_an_error_on_a_render_thread_reaches_the_caller(pipe, portrait):
    s = Settings(steps=2, paste=False, live=True)

    def broken(z):
        raise RuntimeError("renderer failed")

    agent, partner = _tracks(2.5)
    session = LiveSession(pipe.motion_stream(portrait, s), broken, render_threads=2)
    with pytest.raises(RuntimeError, match="renderer failed"):
        _push_all(session, agent, partner)
    assert not session._worker.is_alive()
