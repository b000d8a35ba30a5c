"""Where things sit among the renderer's 129 keypoints (face outline, eyes, lips, brows, nose tip).

`infp.face.topology` derives these positions from MediaPipe's Face Mesh tables; models/ keeps them as
constants so that it needs nothing but torch (tests/test_face.py checks that the two agree).
"""

N_KEYPOINTS = 129  # len(topology.keypoint_indices())
# the inner lip outline in its polygon order (topology.inner_lip_keypoints): the mouth's opening
INNER_LIP = tuple(range(88, 108))
# the upper and the lower inner lip, left inner corner to right, corners shared (topology.inner_lip_arc_keypoints)
INNER_LIP_UPPER = (103, 104, 105, 106, 107, 88, 89, 90, 91, 92, 93)
INNER_LIP_LOWER = (103, 102, 101, 100, 99, 98, 97, 96, 95, 94, 93)
# each eye's upper and lower lid, outer corner to inner, corners shared (topology.eyelid_arc_keypoints)
RIGHT_EYELID_UPPER = (37, 38, 39, 40, 41, 42, 43, 44, 45)
RIGHT_EYELID_LOWER = (37, 36, 51, 50, 49, 48, 47, 46, 45)
LEFT_EYELID_UPPER = (67, 66, 65, 64, 63, 62, 61, 60, 59)
LEFT_EYELID_LOWER = (67, 52, 53, 54, 55, 56, 57, 58, 59)
# each eye's outline in its polygon order (topology.eye_polygons): its opening
RIGHT_EYE = tuple(range(36, 52))
LEFT_EYE = tuple(range(52, 68))
