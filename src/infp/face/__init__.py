"""Face analysis: landmarks, stable crops, head pose, and the motion encoder's input images."""

from infp.face.crop import Jitter, box_jitter, crop_image, face_box, smooth_boxes, to_crop
from infp.face.hybrid import Representation, represent
from infp.face.landmarks import Face, FaceMesh, detect_portrait_face
from infp.face.pose import head_pose

__all__ = [
    "Face", "FaceMesh", "Jitter", "Representation", "box_jitter", "crop_image", "detect_portrait_face",
    "face_box", "head_pose", "represent", "smooth_boxes", "to_crop",
]
