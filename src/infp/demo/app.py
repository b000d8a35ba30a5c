"""The web demo (`infp demo`): a Gradio app, thin on `InfpPipeline`.

- Offline tab: portrait + a two-channel conversation (or two files) -> an MP4, with the voice activity
  of both tracks drawn under it.
- Live tab: the conversation is fed to a streaming session at the pace it would arrive from a call;
  frames are shown as they are generated, with the audio started when the first frame is ready, so
  picture and sound keep the same delay (about one 2-s window plus compute). With `call`, it also links
  to the live call at /call/ (`infp.demo.call`: the visitor's microphone in, face and voice back over
  WebRTC), served by the same server (`call_routes`).

One pipeline serves every visitor; Gradio's queue runs one generation at a time and lets the others
wait. User errors (no face, a mono file, unreadable audio...) are shown in the page; the server keeps
serving.
"""

from __future__ import annotations

import logging
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from infp import FPS
from infp.errors import InfpError

log = logging.getLogger("infp")


class _Shared:
    """The pipeline, loaded on first use (so the page comes up at once) and shared."""

    def __init__(self, load: Callable[[], object]):
        self._load, self._pipe, self._lock = load, None, threading.Lock()

    def __call__(self):
        with self._lock:
            if self._pipe is None:
                self._pipe = self._load()
            return self._pipe


def _conversation(both: str | None, agent: str | None, partner: str | None):
    from infp.audio.io import load_conversation

    if both:
        if agent or partner:
            raise InfpError("give one two-channel conversation file, or the two voices as two files, not both")
        return load_conversation(audio=both)
    if agent and partner:
        return load_conversation(agent=agent, partner=partner)
    if agent or partner:
        raise InfpError("give both voices: the portrait's own and the partner's")
    raise InfpError("upload a conversation: one two-channel file, or the two voices as two files")


def _portrait(pipe, image: np.ndarray | None, keep: bool = False):
    from infp.data.portraits import default_portrait

    name, image = ("upload", image) if image is not None else default_portrait()
    return pipe.prepare(np.ascontiguousarray(image[..., :3]), name, expression="keep" if keep else "neutral")


def _check_note(portrait) -> str:
    """The portrait check in a line, its warnings after it."""
    return "; ".join([f"portrait: {portrait.check.line(portrait.expression)}", *portrait.check.warnings()])


def _user_errors(fn):
    """InfpError (and bad values) -> gr.Error: a message in the page, not a dead worker."""
    import functools

    import gradio as gr

    def shown(e: Exception):
        msg = str(e)
        if isinstance(e, InfpError) and e.path is not None:  # uploads live in Gradio's temp folders
            msg = msg.replace(str(e.path), e.path.name)
        return gr.Error(msg)

    if _is_generator(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except (InfpError, ValueError) as e:
                raise shown(e) from None
        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (InfpError, ValueError) as e:
            raise shown(e) from None
    return call


def _is_generator(fn) -> bool:
    import inspect

    return inspect.isgeneratorfunction(fn)


def build_app(load_pipeline: Callable[[], object], out_dir: str | Path | None = None, call: bool = False):
    """The Gradio Blocks app. `load_pipeline()` returns an `InfpPipeline` (called once, on first use).
    `call`: the live tab links to the microphone call served beside it at /call/ (`call_routes`)."""
    import gradio as gr

    from infp.audio.io import save_wav
    from infp.audio.vad import voice_activity
    from infp.demo.activity import activity_image

    shared = _Shared(load_pipeline)
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="infp_demo_"))
    out_dir.mkdir(parents=True, exist_ok=True)

    @_user_errors
    def offline(image, both, agent, partner, steps, guidance, seed, crop_only, keep,
                progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (Gradio's idiom)
        conversation = _conversation(both, agent, partner)
        pipe = shared()
        portrait = _portrait(pipe, image, keep)
        video = pipe(portrait, conversation, steps=int(steps), guidance=float(guidance), seed=int(seed),
                     paste=not crop_only)
        path = video.write(out_dir / f"infp_{uuid.uuid4().hex[:12]}.mp4", progress=True)
        plot = activity_image(voice_activity(conversation.agent), voice_activity(conversation.partner))
        note = f"{len(video)} frames, {conversation.duration:.1f} s; seed {int(seed)}\n\n{_check_note(portrait)}"
        return str(path), plot, note

    @_user_errors
    def live(image, both, agent, partner, steps, guidance, seed, keep) -> Iterator[tuple]:
        conversation = _conversation(both, agent, partner)
        pipe = shared()
        portrait = _portrait(pipe, image, keep)
        session = pipe.stream(portrait, steps=int(steps), guidance=float(guidance), seed=int(seed), paste=False)
        sound = out_dir / f"infp_live_{uuid.uuid4().hex[:12]}.wav"
        save_wav(sound, (conversation.agent + conversation.partner) / max(1.0, conversation.mix_peak))
        frames: queue.Queue = queue.Queue()
        feeder = threading.Thread(target=_feed, args=(session, conversation, frames), daemon=True)
        started = time.perf_counter()
        feeder.start()
        shown, t0 = 0, None
        while True:
            item = frames.get()
            if item is None:
                break
            if isinstance(item, Exception):
                raise item
            if t0 is None:  # the first frame: start the sound now, so both share the delay
                t0 = time.perf_counter()
                delay = t0 - started
                yield str(sound), item, (f"first frame after {delay:.1f} s (one window of audio plus compute)\n\n"
                                         f"{_check_note(portrait)}")
            else:
                if (wait := t0 + shown / FPS - time.perf_counter()) > 0:
                    time.sleep(wait)
                behind = time.perf_counter() - (t0 + shown / FPS)
                yield gr.skip(), item, f"frame {shown + 1} of {conversation.num_frames()}" + (
                    f" ({behind:.1f} s behind)" if behind > 0.2 else "")
            shown += 1
        yield gr.skip(), gr.skip(), f"done: {shown} frames"

    with gr.Blocks(title="infp: interactive head generation") as app:
        gr.Markdown("# infp\nA portrait that speaks and listens in a two-track conversation (INFP, CVPR 2025). "
                    "Channel 0 of a conversation file is the portrait's own voice, channel 1 the partner's.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Portrait (empty: the packaged astronaut photo)", type="numpy", image_mode="RGB",
                                 elem_id="portrait")
                both = gr.File(label="Conversation: one two-channel audio file", type="filepath", elem_id="conversation")
                with gr.Row():
                    agent = gr.File(label="or: the portrait's voice", type="filepath", elem_id="agent")
                    partner = gr.File(label="and the partner's voice", type="filepath", elem_id="partner")
                with gr.Accordion("Settings", open=False):
                    steps = gr.Slider(2, 50, value=20, step=1, label="DDIM steps")
                    guidance = gr.Slider(1.0, 6.0, value=3.0, step=0.5, label="Audio guidance")
                    seed = gr.Number(value=0, precision=0, label="Seed")
                    crop_only = gr.Checkbox(value=False, label="Face crop only (offline)")
                    keep = gr.Checkbox(value=False, label="Keep the portrait's own expression at rest (by default an open "
                                       "mouth is closed and half-closed eyes opened)")
            with gr.Column():
                with gr.Tab("Offline", id="offline"):
                    run = gr.Button("Generate video", variant="primary", elem_id="generate")
                    video = gr.Video(label="Generated video", elem_id="video", autoplay=False)
                    gr.Markdown("Voice activity: orange, the portrait's own voice; blue, the partner's.")
                    plot = gr.Image(show_label=False, elem_id="activity", interactive=False, height=110)
                    note = gr.Markdown(elem_id="note")
                with gr.Tab("Live", id="live"):
                    if call:
                        gr.Markdown("**Talk to the avatar with your microphone:** [open a live call](/call/) "
                                    "(WebRTC; it listens while you talk and says what you type). Below: a "
                                    "conversation file replayed as if it came from a call.", elem_id="call_link")
                    start = gr.Button("Start live session", variant="primary", elem_id="start_live")
                    live_frame = gr.Image(label="Live", elem_id="live_frame", interactive=False, streaming=True)
                    live_audio = gr.Audio(label="Conversation (plays with the first frame)", autoplay=True,
                                          elem_id="live_audio", interactive=False)
                    live_note = gr.Markdown(elem_id="live_note")
        run.click(offline, [image, both, agent, partner, steps, guidance, seed, crop_only, keep], [video, plot, note])
        start.click(live, [image, both, agent, partner, steps, guidance, seed, keep], [live_audio, live_frame, live_note])
    app.queue(default_concurrency_limit=1, max_size=32)
    app.infp_out_dir = out_dir
    return app


def call_routes(load_pipeline: Callable[[], object]) -> list:
    """The live call (`infp.demo.call`, with the packaged portrait) mounted at /call/ of the demo's
    server (`launch(app_kwargs={"routes": ...})`); [] when aiortc is not installed."""
    try:
        import aiortc  # noqa: F401
    except ImportError:
        log.warning("the live call needs aiortc (pip install 'infp[demo]'): the demo serves without it")
        return []
    from starlette.routing import Mount

    from infp.data.portraits import default_portrait
    from infp.demo.call import build_call_app

    name, image = default_portrait()
    return [Mount("/call", app=build_call_app(load_pipeline, image, name))]


def _feed(session, conversation, frames: queue.Queue) -> None:
    """Push the conversation into `session` at real-time pace (as from a call); frames into `frames`,
    then None (or the exception)."""
    from infp.pipeline.stream import paced_chunks

    try:
        for agent, partner in paced_chunks(conversation.agent, conversation.partner):
            for f in session.push(agent, partner):
                frames.put(f)
        for f in session.finish():
            frames.put(f)
        frames.put(None)
    except Exception as e:  # noqa: BLE001 (handed to the page's generator, which raises it there)
        frames.put(e)
