"""Named constants of the SMPL body format and of the joint sets derived from it.

Nothing here is a size of a particular mesh: vertex counts always come from the loaded model.
Joint indices refer to SMPL's 24-joint kinematic tree, which every SMPL-format model shares.
"""

from __future__ import annotations

from enum import IntEnum

#: SMPL's 24 joints, in kinematic-tree order ("left" is the person's left, +x at rest).
SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip

#: Joint name -> index in SMPL order.
SMPL_JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}


def mirrored_joint_name(name: str) -> str:
    """The left/right partner of a joint name (``left_knee`` <-> ``right_knee``); a joint on
    the body's midline is its own."""
    for side, other in (("left_", "right_"), ("right_", "left_")):
        if name.startswith(side):
            return other + name[len(side):]
    return name


#: For each of the 24 SMPL joints, the index of its left/right partner (itself on the spine).
SMPL_MIRROR_INDEX: tuple[int, ...] = tuple(
    SMPL_JOINT_INDEX[mirrored_joint_name(n)] for n in SMPL_JOINT_NAMES
)

NUM_SMPL_JOINTS = len(SMPL_JOINT_NAMES)
#: Pose blend shape basis size of SMPL: 23 non-root joints x 9 rotation-matrix entries.
NUM_POSE_BASIS = (NUM_SMPL_JOINTS - 1) * 9

#: smplx's 21 extra landmark joints, in the order `smplx.vertex_joint_selector` appends them
#: (face, feet, then left and right finger tips); keys of ``smplx.vertex_ids.vertex_ids``.
LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "reye", "leye", "rear", "lear",
    "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
    "lthumb", "lindex", "lmiddle", "lring", "lpinky",
    "rthumb", "rindex", "rmiddle", "rring", "rpinky",
)  # fmt: skip

#: The 17 Human3.6M-style joints of `BodyTopology.j_regressor_h36m`, in order.
H36M_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "spine", "thorax", "neck_nose", "head_top", "left_shoulder", "left_elbow", "left_wrist",
    "right_shoulder", "right_elbow", "right_wrist",
)  # fmt: skip

#: The standard 14-joint subset (LSP order) as indices into `H36M_JOINT_NAMES`.
H36M_TO_J14: tuple[int, ...] = (3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10)

#: H36M joint index -> the index of its left/right mirror (itself on the mid-line).
H36M_MIRROR: tuple[int, ...] = (0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13)

#: Contact region labels; index = label value, 0 = no region (DESIGN.md contact classes).
CONTACT_REGION_NAMES: tuple[str, ...] = (
    "none", "left_foot", "right_foot", "left_hand", "right_hand", "back", "gluteus", "thighs",
)  # fmt: skip



class ContactRegion(IntEnum):
    """Contact region label values, in `CONTACT_REGION_NAMES` order (a test keeps the two
    equal): write ``labels == ContactRegion.THIGHS``, not ``labels == 7``."""

    NONE = 0
    LEFT_FOOT = 1
    RIGHT_FOOT = 2
    LEFT_HAND = 3
    RIGHT_HAND = 4
    BACK = 5
    GLUTEUS = 6
    THIGHS = 7


#: Contact label -> the label of its left/right mirror.
CONTACT_REGION_MIRROR: tuple[int, ...] = (0, 2, 1, 4, 3, 5, 6, 7)

#: Arrays every SMPL-format model file must hold.
REQUIRED_KEYS: tuple[str, ...] = (
    "v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table",
)  # fmt: skip

#: Longest side (metres) of a body's bounding box above which a body mesh is taken to be in
#: other units: a person spans at most about 2.5 m (arms spread), the same person in
#: centimetres 170 "m", in millimetres 1,700. The readers of other methods' meshes
#: (`sahmr.cli.fit_meshes`, the evaluator) refuse such a mesh with one line saying so.
MAX_BODY_EXTENT_M = 10.0
