"""Look at a generated video: does the mouth follow the portrait's own voice, and what do frames look
like while it speaks and while it listens? MediaPipe measures the frames; Silero VAD splits the audio.

    python scripts/generation_report.py OUT.mp4 CONVERSATION [SHEET.png]

CONVERSATION is the two-channel file the video was made from (channel 0 = the portrait's voice).
Writes a contact sheet (default: next to the video, .sheet.png): a row of frames while the portrait
speaks and a row while it only listens, each cropped around the face.
"""

import sys
from pathlib import Path

import numpy as np

from infp import FPS
from infp.audio import load_conversation, voice_activity
from infp.data.contact import label, pick, sheet, write_png
from infp.eval.behaviour import audio_following, mouth_opening
from infp.eval.motion import measure_landmarks
from infp.face import crop_image, face_box
from infp.video import iter_frames

video, conversation = Path(sys.argv[1]), load_conversation(audio=sys.argv[2])
out = Path(sys.argv[3]) if len(sys.argv) > 3 else video.with_suffix(".sheet.png")

frames = [f for _, f in iter_frames(video)]
points = measure_landmarks(frames)  # (T, 478, 3), NaN where no face
r = audio_following(points, conversation.agent, conversation.partner)
print(f"{video.name}: {len(frames)} frames, face found {100 * r.face_found:.1f}%, mouth ~ agent speech r = "
      f"{r.mouth_vs_agent:+.3f}, ~ partner speech r = {r.mouth_vs_partner:+.3f}; mean opening speaking "
      f"{r.mouth_speaking:.4f}, listening {r.mouth_listening:.4f} (inner-lip gap / face height)")

n = len(frames)
speaking = voice_activity(conversation.agent)[:n]
listening = voice_activity(conversation.partner)[:n] & ~speaking
mouth = np.nan_to_num(mouth_opening(points), nan=-1)
ok = np.isfinite(points[:, 0, 0])
box = face_box(np.nanmedian(points[ok], axis=0)[None])[0] if ok.any() else None
size = 256


def tile(i: int, name: str) -> np.ndarray:
    img = crop_image(frames[i], box, size) if box is not None else frames[i]
    return label(img, f"{name} {i / FPS:.1f}s")


rows = [[tile(i, "speaking") for i in pick(speaking, mouth, 6)], [tile(i, "listening") for i in pick(listening, -mouth, 6)]]
rows = [row for row in rows if row]
write_png(out, sheet(rows, size))
print(f"contact sheet: {out} (top: speaking, widest mouth of each stretch; bottom: listening)")
