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
