"""Run mediapipe's shipped pose model on images; a stand-alone script, not a sahmr module.

`sahmr.detect.runtime` starts this file as a child process (``python _mediapipe_worker.py
REQUEST.npz RESULT.npz``) with mediapipe's private site folder first on ``PYTHONPATH``: that
folder holds mediapipe 0.10.14 and the protobuf 4 it needs, which would clash with the
protobuf >= 6 of tensorboard in the main environment. The script imports only numpy and
mediapipe (not sahmr, not torch), so it starts in about a second.

Request ``.npz``: ``image_<i>`` (H, W, 3) uint8 RGB arrays, ``max_people`` () int,
``min_detection_confidence`` () float, ``mask_margin`` () float, ``tile_grid`` () int.
Result ``.npz``: ``landmarks`` (P, 33, 4) float32 ``[x px, y px, z (mediapipe's relative
depth), visibility]``, ``presence`` (P, 33) float32, ``image_index`` (P,) int64 the image of
each person, ``version`` () str mediapipe's version.

Several people: the legacy pose solution finds one person per call, so after each person the
box around their landmarks is filled with the image's mean colour and the image is run again,
up to ``max_people`` people (the first found is the most salient). Small people: the person
detector sees the image at 224 px, so when fewer than ``max_people`` were found the image is
searched again in ``tile_grid`` x ``tile_grid`` overlapping tiles (each 2 / (grid + 1) of the
image, half a tile apart), people already found masked out; a tile's person is kept unless its
box overlaps an earlier one (IoU > 0.3). ``tile_grid`` 0 or 1: no tiles.
"""

from __future__ import annotations

import sys

import numpy as np

NUM_LANDMARKS = 33
MODEL_COMPLEXITY = 1  # the Full model: the only one the 0.10.14 wheel ships (0 and 2 download)


def _person_box(xy: np.ndarray, vis: np.ndarray, shape: tuple[int, int], margin: float
                ) -> tuple[int, int, int, int]:
    """Integer pixel box around the landmarks (visible ones if any), grown by ``margin``."""
    pts = xy[vis > 0.5] if (vis > 0.5).sum() >= 4 else xy
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    grow = margin * max(x1 - x0, y1 - y0)
    H, W = shape
    return (int(max(0, np.floor(x0 - grow))), int(max(0, np.floor(y0 - grow))),
            int(min(W, np.ceil(x1 + grow))), int(min(H, np.ceil(y1 + grow))))


def _tiles(W: int, H: int, grid: int) -> list[tuple[int, int, int, int]]:
    """Overlapping tiles ``x0, y0, x1, y1``: grid x grid, each 2 / (grid + 1) of the image."""
    if grid <= 1:
        return []
    tw, th = 2.0 * W / (grid + 1), 2.0 * H / (grid + 1)
    return [(int(c * tw / 2), int(r * th / 2), round(c * tw / 2 + tw), round(r * th / 2 + th))
            for r in range(grid) for c in range(grid)]


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def run(request: dict) -> dict:
    """Landmarks of every person found in the request's images (see the module docstring)."""
    import mediapipe as mp

    max_people = int(request["max_people"])
    grid = int(request["tile_grid"]) if "tile_grid" in request else 0
    margin = float(request["mask_margin"])
    images = [request[k] for k in sorted((k for k in request if k.startswith("image_")),
                                         key=lambda k: int(k.split("_")[1]))]
    out_lm, out_pr, out_idx = [], [], []
    with mp.solutions.pose.Pose(
        static_image_mode=True, model_complexity=MODEL_COMPLEXITY, enable_segmentation=False,
        min_detection_confidence=float(request["min_detection_confidence"]),
    ) as pose:
        for i, image in enumerate(images):
            work = np.ascontiguousarray(image).copy()
            H, W = work.shape[:2]
            fill = work.reshape(-1, 3).mean(0).astype(np.uint8)
            boxes: list[tuple[int, int, int, int]] = []
            for x0, y0, x1, y1 in [(0, 0, W, H), *_tiles(W, H, grid)]:
                while len(boxes) < max_people:
                    res = pose.process(np.ascontiguousarray(work[y0:y1, x0:x1]))
                    if res.pose_landmarks is None:
                        break
                    lm = res.pose_landmarks.landmark
                    tw, th = x1 - x0, y1 - y0
                    arr = np.array([[x0 + p.x * tw, y0 + p.y * th, p.z * tw, p.visibility]
                                    for p in lm], dtype=np.float32)
                    box = _person_box(arr[:, :2], arr[:, 3], (H, W), margin)
                    if box[2] <= box[0] or box[3] <= box[1]:
                        break
                    work[box[1]:box[3], box[0]:box[2]] = fill  # look for the next person
                    if any(_iou(box, b) > 0.3 for b in boxes):
                        continue
                    boxes.append(box)
                    out_lm.append(arr)
                    out_pr.append(np.array([getattr(p, "presence", 1.0) for p in lm],
                                           dtype=np.float32))
                    out_idx.append(i)
                if len(boxes) >= max_people:
                    break
    return {
        "landmarks": np.asarray(out_lm, np.float32).reshape(-1, NUM_LANDMARKS, 4),
        "presence": np.asarray(out_pr, np.float32).reshape(-1, NUM_LANDMARKS),
        "image_index": np.asarray(out_idx, np.int64),
        "version": np.asarray(mp.__version__),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: _mediapipe_worker.py REQUEST.npz RESULT.npz", file=sys.stderr)
        return 2
    with np.load(argv[0], allow_pickle=False) as z:
        request = {k: z[k] for k in z.files}
    result = run(request)
    np.savez(argv[1], **result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
