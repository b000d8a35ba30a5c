"""The portrait check: what state the photo's face is in, in one line, and where quality will suffer.

Measured on the landmarks found when the portrait is prepared (no extra pass): the face's size in the
photo, its yaw and pitch (`face.pose`), the mouth's opening (inner-lip gap over face height) and the
eyes' (lid gap over eye width; `face.expression`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infp.face.expression import eye_opening, mouth_opening
from infp.face.pose import head_pose

MOUTH_OPEN = 0.03  # inner-lip gap / face height above which the mouth is open (real closed lips: about 0 to 0.015)
EYES_CLOSED = 0.12  # lid gap / eye width below which the eyes count as closed (open: about 0.25 to 0.4)
EYES_NARROW = 0.2  # below this, half-closed (a squint, a laugh)
SMALL_FACE = 128  # face crop side in the photo's pixels under which the face is upscaled more than 2x
STRONG_YAW = 30.0  # degrees: beyond this the far side of the face is hidden and the renderer has to invent it


@dataclass(frozen=True)
class PortraitCheck:
    face_px: float  # side of the face crop in the photo's pixels
    yaw: float  # degrees, > 0: the nose towards the image's right
    pitch: float  # degrees, > 0: the face up
    mouth: float  # inner-lip gap / face height
    eyes: float  # lid gap / eye width, both eyes

    @property
    def mouth_open(self) -> bool:
        return self.mouth > MOUTH_OPEN

    @property
    def eyes_state(self) -> str:
        return "closed" if self.eyes < EYES_CLOSED else "half-closed" if self.eyes < EYES_NARROW else "open"

    def warnings(self) -> list[str]:
        out = []
        if self.face_px < SMALL_FACE:
            out.append(f"the face is small ({self.face_px:.0f} px across, under {SMALL_FACE}): it is upscaled and "
                       "will look soft; a larger or closer photo gives a sharper video")
        if abs(self.yaw) > STRONG_YAW:
            out.append(f"the head is turned {abs(self.yaw):.0f} degrees (over {STRONG_YAW:.0f}): the hidden side of "
                       "the face cannot be shown when it turns back; a frontal photo works best")
        if self.eyes_state == "closed":
            out.append("the eyes are closed in the photo: the renderer cannot paint open eyes, so they will look closed")
        return out

    def line(self, expression: str = "neutral") -> str:
        """One line for the log and the demo."""
        rest = "closed at rest" if expression == "neutral" else "kept open at rest"
        mouth = f"mouth open ({self.mouth:.3f} of face height; {rest})" if self.mouth_open else "mouth closed"
        return (f"face {self.face_px:.0f} px, yaw {self.yaw:+.0f} deg, pitch {self.pitch:+.0f} deg, {mouth}, "
                f"eyes {self.eyes_state} ({self.eyes:.2f})")


def check_face(points: np.ndarray, face_px: float) -> PortraitCheck:
    """The check of one face: `points` (478, 3) its landmarks (any pixel scale), `face_px` its crop's
    side in the photo."""
    lm = np.asarray(points, np.float64)[None]
    yaw, pitch, _ = head_pose(lm)[0]
    return PortraitCheck(float(face_px), float(yaw), float(pitch), float(mouth_opening(lm)[0]), float(eye_opening(lm)[0]))
