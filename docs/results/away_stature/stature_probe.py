#!/usr/bin/env python3
"""Why tall and short bodies away from the defaults are placed worst (docs/results.md, (x)).

    python3 tools/eval_checkpoint.py checkpoint=sahmr/checkpoints/sahmr_small.pt \
        data.root=AWAY split=test device=cpu save_predictions=true out=EVAL
    python3 docs/results/away_stature/stature_probe.py EVAL/predictions AWAY test

Per stature band of the true body: the predicted body's size over the true one's (RMS
distance of the vertices from their centroid), the predicted over the true camera distance of
the centre, the projected height over the person box, and the centre's error along the camera
ray (positive: the truth is farther). Then the box fit tried on them: each body scaled about
its lowest vertex by k and slid along its camera ray by t (a fraction of its distance), least
squares on the box's top and bottom rows (SIGMA_PX), the lowest vertex on the room's ground
when it is within 10 cm of it (SIGMA_G m; NO_GROUND: never), and priors on log k and t; G-MPVE
before and after. Prints its figures; writes nothing.

    ... stature_probe.py PRED DATA SPLIT [SIGMA_PX SIGMA_G SIGMA_K SIGMA_T [NO_GROUND]]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
from diagnose_depth import load_inputs

from sahmr.evaluation.depth_error import box_height_ratio, ray_errors
from sahmr.scene.orientation import up_vector

BANDS = ((0.0, 1.5), (1.5, 1.6), (1.6, 1.8), (1.8, 1.9), (1.9, 3.0))  # stature, metres


def rows_px(points_world: np.ndarray, T_w2c: np.ndarray, K: np.ndarray) -> np.ndarray:
    cam = points_world @ T_w2c[:3, :3].T + T_w2c[:3, 3]
    return K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]


def box_fit(inp: dict, up: np.ndarray, sigmas: tuple[float, ...], ground_on: bool) -> np.ndarray:
    """(N, V, 3) bodies after the fit described above."""
    s_px, s_g, s_k, s_t = sigmas
    out = []
    for n, X in enumerate(inp["pred"]):
        heights = X @ up
        low = int(np.argmin(heights))
        grounded = ground_on and np.isfinite(inp["ground"][n]) and (
            abs(heights[low] - inp["ground"][n]) < 0.10
        )
        centre = X.mean(0)
        dist = float(np.linalg.norm(centre - inp["camera"][n]))
        ray = (centre - inp["camera"][n]) / dist

        def moved(p: np.ndarray, X=X, low=low, dist=dist, ray=ray) -> np.ndarray:
            return X[low] + np.exp(p[0]) * (X - X[low]) + p[1] * dist * ray

        def residuals(p: np.ndarray, n=n, grounded=grounded, moved=moved) -> np.ndarray:
            Y = moved(p)
            v = rows_px(Y, inp["T"][n], inp["K"][n])
            box = inp["bbox"][n]
            r = [(v.min() - box[1]) / s_px, (v.max() - box[3]) / s_px, p[0] / s_k, p[1] / s_t]
            if grounded:
                r.append(((Y @ up).min() - inp["ground"][n]) / s_g)
            return np.array(r)

        out.append(moved(least_squares(residuals, np.zeros(2), method="lm").x))
    return np.stack(out)


def main(argv: list[str]) -> None:
    pred, data, split = Path(argv[0]), Path(argv[1]), argv[2]
    sigmas = tuple(float(x) for x in argv[3:7]) or (5.0, 1000.0, 0.03, 0.001)
    ground_on = not (len(argv) > 7 and argv[7] == "NO_GROUND")
    inp = load_inputs(pred, data, split)
    rot, shift = inp["T"][:, :3, :3], inp["T"][:, None, 2, 3]
    depth = np.einsum("nij,nvj->nvi", rot, inp["pred"])[..., 2] + shift
    front = (depth > 0).all(axis=1)  # a body with a vertex behind its camera has no box ratio
    if not front.all():
        print(f"{(~front).sum()} frame(s) left out: a predicted vertex behind the camera")
        inp = {k: ([v[i] for i in np.flatnonzero(front)] if isinstance(v, list) else
                   v[front] if isinstance(v, np.ndarray) and len(v) == len(front) else v)
               for k, v in inp.items()}  # fmt: skip
    from sahmr.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(data, split)
    stature = np.asarray(ds.columns(["height"])["height"], np.float64)
    index = [int(name.rsplit("-", 1)[1]) for name in inp["names"]]
    stature = stature[index]
    up = up_vector(inp["up_axis"])
    P, G, cam = inp["pred"], inp["gt"], inp["camera"]

    def size(V: np.ndarray) -> np.ndarray:
        return np.sqrt(((V - V.mean(1, keepdims=True)) ** 2).sum(-1).mean(-1))

    size_ratio = size(P) / size(G)
    dist_ratio = np.linalg.norm(P.mean(1) - cam, axis=1) / np.linalg.norm(G.mean(1) - cam, axis=1)
    box = box_height_ratio(P, inp["K"], inp["T"], inp["bbox"])
    err = ray_errors(P, G, cam, up)
    print(f"{len(P)} frames; r(size ratio, distance ratio) = "
          f"{np.corrcoef(size_ratio, dist_ratio)[0, 1]:.2f}")  # fmt: skip
    print("| stature (m) | frames | size ratio | distance ratio | box height ratio (median) "
          "| along the ray (mm) | G-MPVE |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for lo, hi in BANDS:
        m = (stature >= lo) & (stature < hi)
        if m.any():
            along, g = err.along_m[m].mean() * 1000, err.g_mpve_mm[m].mean()
            print(f"| {lo}-{hi} | {m.sum()} | {size_ratio[m].mean():.3f} | "
                  f"{dist_ratio[m].mean():.3f} | {np.median(box[m]):.3f} | {along:+.0f} | "
                  f"{g:.1f} |")  # fmt: skip
    fitted = box_fit(inp, up, sigmas, ground_on)
    before = np.linalg.norm(P - G, axis=-1).mean(-1) * 1000
    after = np.linalg.norm(fitted - G, axis=-1).mean(-1) * 1000
    print(f"box fit {sigmas} ground={ground_on}: G-MPVE {before.mean():.1f} -> {after.mean():.1f}"
          f" (median {np.median(before):.1f} -> {np.median(after):.1f}); "
          f"better in {np.mean(after < before):.0%} of the frames")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
