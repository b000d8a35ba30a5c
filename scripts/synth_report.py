"""Check synthetic clips: face found, and mouth opening vs. each track (measured with MediaPipe).

    python scripts/synth_report.py OUT_DIR
"""

import sys

import numpy as np

from infp.data.clip import list_clips
from infp.eval.behaviour import clip_audio_following, mouth_opening, pearson
from infp.face import head_pose

rows = []
for clip in list_clips(sys.argv[1]):
    r = clip_audio_following(clip)
    beh = clip.behaviour()
    lm = clip.landmarks()
    gt = pearson(mouth_opening(lm), beh.mouth) if beh is not None else float("nan")
    pose = head_pose(lm)
    gt_pose = [pearson(pose[:, i], getattr(beh, k)) for i, k in enumerate(("yaw", "pitch", "roll"))] if beh is not None else []
    rows.append(r)
    print(f"{clip.meta.id}  face {100 * r.face_found:5.1f}%  corr(mouth, agent) {r.mouth_vs_agent:+.3f}  "
          f"corr(mouth, partner) {r.mouth_vs_partner:+.3f} (agent silent: {r.mouth_vs_partner_agent_silent:+.3f})  "
          f"corr(mouth, GT) {gt:+.3f}  corr(yaw/pitch/roll, GT) {' '.join(f'{c:+.2f}' for c in gt_pose)}  "
          f"opening speaking {r.mouth_speaking:.3f} listening {r.mouth_listening:.3f}")
print(f"mean  face {100 * np.mean([r.face_found for r in rows]):5.1f}%  corr agent {np.nanmean([r.mouth_vs_agent for r in rows]):+.3f}  "
      f"corr partner {np.nanmean([r.mouth_vs_partner for r in rows]):+.3f} "
      f"(agent silent {np.nanmean([r.mouth_vs_partner_agent_silent for r in rows]):+.3f})")
