"""tools/benchmark_train.py with the body model's kinematic chain walked by smplx again (its
``parents[i]`` host reads: 23 per body forward): the "before" arm of the A/B (ab.sh).

    python3 docs/results/body_sync/smplx_chain.py [tools/benchmark_train.py arguments]
"""

import runpy
import sys
from pathlib import Path

import smplx.lbs

import sahmr.body.model as body_model


def smplx_skin(self, betas, rot_mats):
    """`BodyModel._skin` as it was before 2026-12-06: smplx.lbs.lbs on rotation matrices."""
    return smplx.lbs.lbs(betas, rot_mats, self.v_template, self.shapedirs, self.posedirs,
                         self.J_regressor, self.parents, self.lbs_weights, pose2rot=False)


def use_smplx_chain() -> None:
    """Every `BodyModel` skins through smplx's joint-by-joint chain from now on."""
    body_model.BodyModel._skin = smplx_skin


if __name__ == "__main__":
    use_smplx_chain()
    tool = Path(__file__).resolve().parents[3] / "tools" / "benchmark_train.py"
    sys.argv = [str(tool), *sys.argv[1:]]
    runpy.run_path(str(tool), run_name="__main__")
