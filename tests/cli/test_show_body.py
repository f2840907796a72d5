import json

import numpy as np
import trimesh
from PIL import Image

from sahmr.body.poses import STANDARD_POSE_NAMES
from sahmr.cli.show_body import main


def test_show_body_writes_picture_mesh_and_summary(tmp_path):
    assert main(["--out", str(tmp_path), "--size", "48", "--betas", "1.0"]) == 0
    sheet = np.asarray(Image.open(tmp_path / "body_showcase.png"))
    assert sheet.ndim == 3 and sheet.shape[2] == 3
    # Two views per pose, four tiles a row: the body is drawn (non-white pixels) in the sheet.
    rows = (2 * len(STANDARD_POSE_NAMES) + 3) // 4
    assert sheet.shape[0] == rows * (48 + 4) + 4
    assert (sheet < 200).any()
    mesh = trimesh.load(tmp_path / "rest_pose.ply", process=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(mesh.vertices) == summary["num_vertices"] == 6890
    assert 1.65 < summary["rest_height_m"] < 1.95  # beta0 = +1 is about 6 cm taller


def test_show_body_reports_a_missing_model(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
