"""A live call in the browser over WebRTC (`infp call`): the visitor's microphone is the partner track,
the agent speaks what is typed in the page (espeak-ng) or a file given at start, and the avatar's frames
and the agent's voice come back as WebRTC tracks (aiortc on the server, the browser's own WebRTC in the
page: no polling).

- The microphone's 48-kHz frames are resampled to 16 kHz and pushed, with as much of the agent's
  queued voice (or silence), into a `pipe.live` session; pushing never waits for the models.
- The video track sends 25 frames a second, each the newest frame the session has delivered (frames
  the session dropped as late, or that came faster than they are sent, are never queued); the audio
  track sends the agent's voice of the frames delivered, 20 ms at a time, silence when there is none.
- One call at a time: a second visitor is told the line is busy; a call whose browser goes away is
  hung up and its session closed.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from infp import FPS, SAMPLE_RATE

log = logging.getLogger("infp")

VIDEO_CLOCK = 90_000  # RTP clock of video
AUDIO_PACKET = SAMPLE_RATE // 50  # 20 ms of the agent's voice per audio frame
VOICE = ("en+m3", 50, 165)  # espeak-ng voice, pitch, words per minute of typed text


class Samples:
    """A queue of 16 kHz float32 samples, taken n at a time with silence where it runs short; with
    `max_seconds`, the oldest are dropped past that. Thread-safe."""

    def __init__(self, max_seconds: float | None = None):
        self._queued = np.zeros(0, np.float32)
        self._max = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
        self._lock = threading.Lock()

    def put(self, audio: np.ndarray) -> None:
        with self._lock:
            self._queued = np.concatenate([self._queued, np.asarray(audio, np.float32)])
            if self._max is not None:
                self._queued = self._queued[-self._max :]

    def take(self, n: int) -> np.ndarray:
        """The next n samples, silence where nothing is queued."""
        with self._lock:
            out, self._queued = self._queued[:n], self._queued[n:]
        return np.pad(out, (0, n - len(out)))

    @property
    def seconds_left(self) -> float:
        return len(self._queued) / SAMPLE_RATE


class Call:
    """One visitor's call: the live session fed by the microphone, read by the two outgoing tracks."""

    def __init__(self, session, still: np.ndarray, voice: Samples):
        self.session = session
        self.voice = voice  # what the agent still has to say, taken as the microphone's audio arrives
        self.latest = still  # what the video track sends until the first frame comes
        # the agent's audio of delivered frames, not yet sent: at most 4 s (the oldest go first if the
        # audio track ever stops taking it)
        self.voice_out = Samples(max_seconds=4)
        self.frames_sent = 0
        self.mic_seconds = 0.0
        self.started = time.time()

    def pump(self) -> None:
        """Take the frames the session has delivered: keep the newest, queue their audio."""
        for f in self.session.frames():
            self.latest = f.image
            self.voice_out.put(f.agent_audio)

    async def listen(self, track) -> None:
        """Push the microphone into the session until its track ends."""
        import av
        from aiortc.mediastreams import MediaStreamError

        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for f in resampler.resample(frame):
                mic = f.to_ndarray().reshape(-1).astype(np.float32)
                self.session.push(self.voice.take(len(mic)), mic)
                self.mic_seconds += len(mic) / SAMPLE_RATE

    def stats(self) -> dict:
        s = self.session.stats
        return {"seconds": round(time.time() - self.started, 2), "mic_seconds": round(self.mic_seconds, 2),
                "frames_delivered": s.frames, "frames_sent": self.frames_sent, "dropped_late": s.dropped_late,
                "lag_s": round(s.lag_s, 3), "agent_seconds_queued": round(self.voice.seconds_left, 2)}


def _tracks(call: Call):
    """The two outgoing tracks of a call (aiortc MediaStreamTracks), each paced by the wall clock."""
    import av
    from aiortc import MediaStreamTrack

    class Paced(MediaStreamTrack):
        rate = 1

        def __init__(self):
            super().__init__()
            self.n, self.t0 = 0, None

        async def tick(self) -> int:
            self.t0 = time.time() if self.t0 is None else self.t0
            if (wait := self.t0 + self.n / self.rate - time.time()) > 0:
                await asyncio.sleep(wait)
            self.n += 1
            return self.n - 1

    class Video(Paced):
        kind, rate = "video", FPS

        async def recv(self):
            n = await self.tick()
            call.pump()
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(call.latest), format="rgb24")
            frame.pts, frame.time_base = n * VIDEO_CLOCK // FPS, fractions.Fraction(1, VIDEO_CLOCK)
            call.frames_sent += 1
            return frame

    class Voice(Paced):
        kind, rate = "audio", SAMPLE_RATE // AUDIO_PACKET

        async def recv(self):
            n = await self.tick()
            pcm = np.clip(call.voice_out.take(AUDIO_PACKET) * 32767, -32768, 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, n * AUDIO_PACKET
            frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
            return frame

    return Video(), Voice()


def build_call_app(load_pipeline: Callable[[], object], image: np.ndarray, name: str = "portrait",
                   agent_audio: np.ndarray | None = None, **settings):
    """The FastAPI app of `infp call`: the page at /, the WebRTC offer at /offer, typed speech at /say,
    /stats and /hangup. `settings`: of `pipe.live` (steps, size, ...)."""
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse

    app = FastAPI(title="infp call")
    state: dict = {"call": None, "pc": None, "portrait": None}
    lock = asyncio.Lock()
    settings = {"steps": 10, "paste": False, "size": 384, **settings}

    def prepared():
        pipe = load_pipeline()
        if state["portrait"] is None:
            from infp.pipeline import Settings

            portrait = pipe.prepare(image, name)
            still = pipe.renderer(portrait, Settings(paste=False, size=settings["size"]))(portrait.start[None].cpu().numpy())[0]
            state["portrait"] = (portrait, still)
        return pipe, *state["portrait"]

    async def hang_up() -> None:
        call, pc = state["call"], state["pc"]
        state["call"] = state["pc"] = None
        if pc is not None:
            await pc.close()
        if call is not None:
            await asyncio.to_thread(call.session.close, 10.0)
            log.info("call ended: %s", call.stats())

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return (Path(__file__).parent / "call.html").read_text()

    @app.post("/offer")
    async def offer(body: dict):
        async with lock:
            if state["call"] is not None:
                return JSONResponse({"error": "the avatar is in another call; try again when it ends"}, status_code=409)
            try:
                pipe, portrait, still = await asyncio.to_thread(prepared)
            except Exception as e:  # noqa: BLE001 - shown in the page; the server keeps serving
                log.exception("cannot start a call")
                return JSONResponse({"error": f"cannot start the call: {e}"}, status_code=500)
            voice = Samples()
            if agent_audio is not None:
                voice.put(agent_audio)
            call = Call(pipe.live(portrait, **settings), still, voice)
            pc = RTCPeerConnection()
            state["call"], state["pc"] = call, pc

            @pc.on("track")
            def on_track(track) -> None:
                if track.kind == "audio":
                    asyncio.ensure_future(call.listen(track))

            @pc.on("connectionstatechange")
            async def on_state() -> None:
                if pc.connectionState in ("failed", "closed") and state["pc"] is pc:
                    await hang_up()

            await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
            for track in _tracks(call):
                pc.addTrack(track)
            await pc.setLocalDescription(await pc.createAnswer())
            return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    @app.post("/say")
    async def say(body: dict):
        text = str(body.get("text", "")).strip()[:500]
        if state["call"] is None:
            return JSONResponse({"error": "no call: start one first"}, status_code=409)
        if text:
            from infp.data.speech import EspeakVoice
            from infp.errors import InfpError

            try:
                audio = await asyncio.to_thread(EspeakVoice(*VOICE).say, text)
            except InfpError as e:  # espeak-ng missing: told in the page
                return JSONResponse({"error": str(e)}, status_code=500)
            if state["call"] is None:  # hung up while the words were synthesised
                return JSONResponse({"error": "the call has ended"}, status_code=409)
            state["call"].voice.put(audio)
        return {"queued_s": round(state["call"].voice.seconds_left, 2)}

    @app.get("/stats")
    async def stats():
        return state["call"].stats() if state["call"] is not None else {"call": None}

    @app.post("/hangup")
    async def hangup():
        async with lock:
            await hang_up()
        return {"ok": True}

    def close_call() -> None:
        """Stop a call's session from outside the server's loop (the server is stopping)."""
        if state["call"] is not None:
            state["call"].session.close(10.0)

    app.router.on_shutdown.append(hang_up)
    app.state.close_call = close_call
    return app
