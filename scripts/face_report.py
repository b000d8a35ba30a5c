"""Face analysis on real videos: fraction of frames with a face, crop jitter, head-pose range.

    python scripts/face_report.py ../shared/data/videos/*.mp4
"""

import sys
import time

import numpy as np

from infp.face import box_jitter, face_box, head_pose
from infp.face.track import track_video

print(f"{'video':42s} {'frames':>6s} {'detected':>8s} {'usable':>7s} {'jitter raw':>10s} {'jitter smooth':>13s} "
      f"{'yaw range':>9s} {'pitch range':>11s} {'fps':>5s}")
for path in sys.argv[1:]:
    t = time.time()
    tr = track_video(path)
    dt = time.time() - t
    ok = tr.found
    raw = box_jitter(face_box(tr.landmarks[ok])) if ok.any() else None
    pose = head_pose(tr.landmarks[ok]) if ok.any() else np.zeros((1, 3))
    print(f"{path.split('/')[-1]:42s} {len(ok):6d} {100 * tr.detected.mean():7.1f}% {100 * ok.mean():6.1f}% "
          f"{raw.centre if raw else float('nan'):9.3f}% {tr.jitter().centre:12.3f}% "
          f"{np.ptp(pose[:, 0]):8.1f}° {np.ptp(pose[:, 1]):10.1f}° {len(ok) / dt:5.0f}")
