#!/usr/bin/env python3
"""One GPU lease: fresh data, SA-HMR continued from the shipped checkpoint, and every score
needed to decide whether it replaces the shipped one.

Jobs (the runner is `campaign.run`; detach it with ``setsid`` and poll with ``--status``):

1. ``data``: a fresh generated set (rooms split train/val/test by room; val and test shards
   written first), ``data_away``: a held-out set away from the generator's defaults (extreme
   shapes, low/high/far cameras, occluders). Fresh means another set every lease:
   ``--data-seed S`` (default: drawn from the clock and written to the campaign's log) seeds
   the bodies, cameras and poses of both sets (the away set with S + 1) and gives the train
   split 40 rooms of its own per kind (room seeds ``TRAIN_ROOM_BASE + 40 S`` onwards); the
   val and test room pools stay the config's, so every lease scores on held-out rooms; the
   seed picks which of them its shards are set in. One shard is set in one room: at 250
   frames a shard, runs 33 and 34 scored 960 test frames from 5 of the 24 test rooms each
   (one room in common), so val and test (and the away set) are written in shards of
   ``--eval-shard-samples`` (50: about 19 of the 30 val rooms and 17 of the test rooms).
   ``--data-seed 0`` is the set every lease up to run 33 generated: the generator's
   defaults, the same frames each time;
2. ``train``: by default ``exp=sahmr_small_finetune`` - the mesh network trained on a frozen
   RCNet's roots and contacts (two ROI refinements, as the shipped model predicts), lr 1e-4
   with the parametric head at 1.5x, shape term 0.5, from the shipped weights
   (``init.weights``), a fresh optimiser with a 150-step warm-up (runs 16, 23 and 25,
   docs/results.md); ``--exp sahmr_small_e2e --lr 5e-5 --lr-multipliers
   '{mesh_net.param_head:2.0,rcnet:0.5}'`` trains RCNet with it (runs 9 and 12);
   ``--exp metro_small`` or ``--exp hmr`` trains that image-only baseline instead
   (`BASELINE_DEFAULTS`: no RCNet store, head refit or step profile), continuing its shipped
   checkpoint (``sahmr/checkpoints/metro_small.pt``, run 35) or from random weights when none
   is shipped or with ``--from-scratch``; exported int8 (METRO) or float16 (HMR), scored
   beside the shipped SA-HMR on the same frames, and beside the baseline it continued on val
   (``eval_shipped_baseline_val``: a new baseline ships only when it beats that);
   ``--exp rcnet_small`` trains the shipped model's RCNet alone (`VOTER_EXP`): it starts from
   the shipped file's ``rcnet.`` weights, validates as the shipped model votes (its ROI
   refinements and depth search), and ``export`` puts the best-on-val RCNet back into the
   shipped file beside its mesh network, whose head the refit then fits to the new roots. It starts
   once val and test are on disk and streams the training shards while the generator still
   writes them (``loader=memory``); the generator is stopped when training ends;
3. ``export``: best-on-val weights, int8 (`sahmr.engine.quantize`) but for the parts under
   ``--export-fp16-under`` (the mesh network) in float16, and those under
   ``--export-int8-under`` (its encoder, to be frozen in training:
   ``trainer.frozen_parameters``) int8 again: 19.5 MB (18.6 MiB). Run 30's all-int8 export
   dropped the fine-tune's moves (most under a tenth of an int8 step) and re-rounded every
   channel whose scale had changed; ``--free-form`` also scores a copy whose config returns
   the free-form vertices (same weights); ``export_last``: the weights the training ended
   with, exported the same way, brought back unscored (run 29's best-on-val was step 250
   while its mesh network kept improving to the last step, and those weights stayed on the
   lent machine);
4. ``refit`` (``--refit-train-frames N``, 8,000 by default; 0: none): the head of the
   network the training left refitted on the GPU (``tools/refit_head.py --device cuda``) on
   its own frozen encoder outputs for N fresh train frames, with RCNet's roots and contacts
   as at test time and the scene penetration term; ``export_refit`` ships it int8 like
   ``export``. Every lease's training up to run 26 ended worse than its start on val, and
   every refit of the network it left beat the start (runs 16 -> 19 on the CPU, run 25 in
   one lease): the refit is what shipped. Run 29 (frozen BatchNorm, no query masking) ended
   level with its start, and its refit gained nothing;
5. scores of the new (and refitted) and the shipped checkpoints on val, test and the away set;
   the shipped checkpoint's once the training has ended and the new file is exported, so the
   new file's val is scored first (``--shipped-scores beside``: during
   it, as up to run 23, where they shared the GPU and the cores with the training and the
   generator); the trained network itself on val alone (``--new-scores all``: everywhere);
   ``--max-evals`` (`MAX_EVALS`) of them at once.

    setsid python3 tools/gpu/parametric_run.py --root outputs/gpu > outputs/gpu.log 2>&1 &
    python3 tools/gpu/parametric_run.py --root outputs/gpu --status
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from campaign import MAX_EVALS, PY, REPO, Job, collect, eval_cmd, run

SHIPPED = REPO / "sahmr" / "checkpoints" / "sahmr_small.pt"
BASELINE_DEFAULTS = {
    # image-only baselines (issue 18's comparison table), placed in the room by PnP; the
    # module paths are those of `sahmr.models.metro.METRO` and `sahmr.models.hmr.HMR`, METRO
    # compiled as in docs/benchmarks.md's fastest row (2,139 samples/s on an H200). int8:
    # exported as it ships (METRO small 7.2 MB, run 35: G-MPJPE 355.7 against 357.3 in float16
    # on 1,000 test frames); HMR's ResNet-50 stays float16 (55 MB: not shippable either way)
    "metro_small": {
        "compile": "[backbone,encoder,upsampler,cam_head]",
        "betas": True,
        "int8": True,
    },
    "hmr": {
        "compile": "[backbone]",
        "betas": False,  # configs/loss/hmr.yaml: no param_terms
        "int8": False,
    },
}
"""``--exp`` values trained as baselines: no RCNet, no head refit, no step profile; each
continues from its shipped checkpoint (`shipped_baseline`) when there is one, else (or with
``--from-scratch``) from random weights; the shipped SA-HMR is scored on the same frames."""

SAHMR_EXPORT_FP16 = ["mesh_net"]
SAHMR_EXPORT_INT8 = ["mesh_net.encoder"]
"""The shipped SA-HMR's export precisions (section (p) of docs/results.md): int8, but the mesh
network in float16 and its encoder int8 again."""

VOTER_EXP = "rcnet_small"
"""``--exp`` that trains the shipped SA-HMR's RCNet (root and contacts) alone, on its own loss
(configs/exp/rcnet_small.yaml), with the mesh network left as shipped. RCNet last trained in
run 12 (docs/results.md): its vote holds the root error."""

VOTER_DEFAULTS = {
    "compile": "[]",  # the sparse branch is most of the step, and its shapes vary
    "lr_multipliers": "{}",
    "export_fp16_under": SAHMR_EXPORT_FP16,
    "export_int8_under": SAHMR_EXPORT_INT8,
    "refit_train_frames": 8000,
    "new_scores": "val",
}

VOTER_EXPORT = "rcnet_small.pt"
"""A voter lease's best-on-val RCNet alone, float16 (``export_rcnet``; brought back with the
other exports)."""

VOTER_SETTINGS = ("roi_refinements", "depth_hypotheses", "depth_hypothesis_margin",
                  "roi_depth_noise")
"""The shipped RCNet's settings (``model.rcnet.*`` in its stored config) that a voter lease's
RCNet keeps: its validation votes as the shipped model votes, and its teacher-forced ROIs are
drawn as the shipped RCNet's last training drew them (run 42: along the ray); a key the stored
config lacks keeps the experiment's default, and ``--train-extra`` overrides any of them."""

SAHMR_DEFAULTS = {
    "compile": "[mesh_net.backbone,mesh_net.upsampler]",
    "lr_multipliers": "{mesh_net.param_head:1.5}",
    "export_fp16_under": SAHMR_EXPORT_FP16,
    "export_int8_under": SAHMR_EXPORT_INT8,
    "refit_train_frames": 8000,
    "new_scores": "val",
}

SDF_WARM_WORKERS = 2
"""Processes that build the scoring's SDF grids beside the training (``warm_sdfs``; about 15 s
a room on one core of the H100 machine, run 35)."""
AWAY_OVERRIDES = ("--config-name", "make_dataset_away")  # configs/make_dataset_away.yaml
TRAIN_ROOMS_PER_KIND = 40  # configs/make_dataset.yaml's train seed_range [100, 140)
TRAIN_ROOM_BASE = 1000
"""First train room seed of a lease with ``--data-seed`` S > 0 is ``TRAIN_ROOM_BASE + 40 S``:
above every seed configs/make_dataset.yaml and sahmr.synth.bundled give val, test and the
bundled rooms (1-3, 100-145, 500-503), so the splits stay disjoint."""
# The generator runs beside the training at a lower CPU priority: at equal priority its
# workers time-sliced the training's main process (222-301 samples/s vs 470-730 alone).
NICE = ["nice", "-n", "15"]
# One thread per generator process for the numerical libraries (the pool is the parallelism):
# 15 workers measured 8 samples/s each on the 16-core GPU machine against ~35 on a 2-core CPU
# machine, which points at thread pools (OpenBLAS, OpenMP) of one thread per core in every worker.
ONE_THREAD = [
    "env",
    "OMP_NUM_THREADS=1",
    "OPENBLAS_NUM_THREADS=1",
    "MKL_NUM_THREADS=1",
    "NUMEXPR_NUM_THREADS=1",
]


def free_form_copy(src: Path, dst: Path) -> None:
    """``src`` with ``model.mesh_net.free_form_output: true`` in its stored config."""
    from omegaconf import OmegaConf

    from sahmr.engine.checkpoint import atomic_torch_save, checkpoint_config, load_checkpoint

    ckpt = load_checkpoint(src)
    cfg = checkpoint_config(ckpt, src)
    OmegaConf.update(cfg, "model.mesh_net.free_form_output", True)
    ckpt["config"] = OmegaConf.to_yaml(cfg, resolve=True)
    atomic_torch_save(ckpt, dst)


def wait_for_splits(data: Path, splits: list[str], poll_s: float = 5.0) -> None:
    """Blocks until ``data/dataset.json`` exists and every planned shard of ``splits`` is on
    disk (`sahmr.cli.checks.missing_shards`)."""
    import json
    import time

    from sahmr.cli.checks import missing_shards

    while True:
        meta_path = data / "dataset.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not any(missing_shards(data, meta, split) for split in splits):
                return
        time.sleep(poll_s)


def split_rooms(data: Path, split: str) -> list[str]:
    """The rooms a split's written shards use (`sahmr.data.synthetic.SyntheticDataset`'s
    scene index, which loads nothing until asked)."""
    from sahmr.data.synthetic import SyntheticDataset

    return sorted(SyntheticDataset(data, split).scene_points)


def _warm_one(rooms: Path, name: str, voxel_size: float) -> str:
    from sahmr.evaluation.evaluator import SceneSDFs

    SceneSDFs(scene_dir=rooms, voxel_size=voxel_size).get(name)
    return name


def warm_sdfs(data: Path, split: str, workers: int = SDF_WARM_WORKERS) -> list[str]:
    """Builds the SDF grids that scoring ``split`` with scene metrics reads, into the cache
    `tools/eval_checkpoint.py` then finds (``$SAHMR_CACHE_DIR``, which the campaign sets for
    every job): the same `sahmr.evaluation.evaluator.SceneSDFs` and pitch (configs/eval.yaml's
    ``sdf_voxel_size``), so the same cache key. Run 35's first test scoring spent 4.4 of its
    minutes building 17 rooms' grids after the training, and the campaign's time ran out
    before the next scoring; built beside the training they cost no lease time. Returns the
    rooms."""
    from concurrent.futures import ProcessPoolExecutor

    from omegaconf import OmegaConf

    voxel_size = float(OmegaConf.load(REPO / "configs" / "eval.yaml").sdf_voxel_size)
    names = split_rooms(data, split)
    if workers <= 1:
        return [_warm_one(data / "rooms", n, voxel_size) for n in names]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_warm_one, [data / "rooms"] * len(names), names,
                             [voxel_size] * len(names)))  # fmt: skip


def is_baseline(a: argparse.Namespace) -> bool:
    return a.exp in BASELINE_DEFAULTS


def shipped_baseline(exp: str) -> Path:
    """Where a baseline's shipped checkpoint lies (``sahmr/checkpoints/<exp>.pt``, the file
    `sahmr.inference.method.bundled_checkpoint` finds for ``--method metro``)."""
    return SHIPPED.with_name(f"{exp}.pt")


def baseline_init(a: argparse.Namespace) -> Path | None:
    """The weights a baseline lease continues from: its shipped checkpoint, unless
    ``--from-scratch`` or none is shipped (None: random weights)."""
    if not is_baseline(a) or a.from_scratch:
        return None
    path = shipped_baseline(a.exp)
    return path if path.is_file() else None


def is_voter(a: argparse.Namespace) -> bool:
    return a.exp == VOTER_EXP


def voter_settings() -> list[str]:
    """Overrides that give a voter lease's RCNet the shipped RCNet's settings
    (`VOTER_SETTINGS`)."""
    from omegaconf import OmegaConf

    from sahmr.engine.checkpoint import checkpoint_config, load_checkpoint

    rcnet = checkpoint_config(load_checkpoint(SHIPPED), SHIPPED).model.rcnet
    out = []
    for key in VOTER_SETTINGS:
        value = OmegaConf.select(rcnet, key)
        if value is not None:
            value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            out.append(f"model.{key}={value}".replace(" ", ""))
    return out


def apply_exp_defaults(a: argparse.Namespace) -> None:
    """Fills the options left unset (None) with the experiment's defaults; a baseline refuses
    what only SA-HMR has (`main` reports the ValueError in one line)."""
    if a.rcnet_new_per_step < 0 or (a.rcnet_new_per_step and not a.rcnet_once):
        raise ValueError("--rcnet-new-per-step caps the stored RCNet's new frames: a count "
                         ">= 0, with --rcnet-once")  # fmt: skip
    if is_baseline(a):
        if a.rcnet_once or a.scene_penetration > 0 or (a.refit_train_frames or 0) > 0:
            raise ValueError(f"--exp {a.exp} is image-only: no --rcnet-once, "
                             "--scene-penetration or --refit-train-frames")  # fmt: skip
        base = BASELINE_DEFAULTS[a.exp]
        fill = {"compile": base["compile"], "lr_multipliers": "{}", "export_fp16_under": [],
                "export_int8_under": [], "refit_train_frames": 0, "new_scores": "all"}  # fmt: skip
        a.no_profile = True  # the profile times SA-HMR's step
    elif is_voter(a):
        if a.rcnet_once or a.scene_penetration > 0:
            raise ValueError(f"--exp {a.exp} trains RCNet: no --rcnet-once or "
                             "--scene-penetration (the mesh network stays as shipped)")  # fmt: skip
        fill = VOTER_DEFAULTS
        a.no_profile = True
    else:
        fill = SAHMR_DEFAULTS
    for key, value in fill.items():
        if getattr(a, key) is None:
            setattr(a, key, value)


def run_name(a: argparse.Namespace) -> str:
    """The training's run folder under ``<root>/runs`` (its DataLoader fallback adds
    ``_dl``)."""
    return f"{a.exp}_run" if is_baseline(a) or is_voter(a) else "sahmr_param"


def export_names(a: argparse.Namespace) -> tuple[str, str]:
    """File names of the exported best-on-val and last weights (a baseline's last is not
    exported)."""
    if is_baseline(a):
        return f"{a.exp}.pt", f"{a.exp}_last.pt"
    return "sahmr_small_param.pt", LAST_EXPORT


def start_weights(a: argparse.Namespace) -> Path | None:
    """The weights the training starts from: the shipped SA-HMR, a baseline's shipped
    checkpoint (`baseline_init`), or None (random weights)."""
    return baseline_init(a) if is_baseline(a) else SHIPPED


def train_calls(a: argparse.Namespace, data: Path) -> list[str]:
    """The training command on the in-memory data path, and the DataLoader path as the
    fallback (its own run folder) should the first fail."""
    common = [
        PY,
        "tools/train.py",
        f"exp={a.exp}",
        f"data.root={data}",
        *([f"init.weights={init}"] if (init := start_weights(a)) else []),
        "resume=true",
        f"trainer.max_minutes={a.train_minutes}",
        f"trainer.max_steps={a.max_steps}",
        f"trainer.batch_size={a.batch}",
        f"trainer.lr={a.lr}",
        f"trainer.warmup_steps={a.warmup}",
        f"trainer.num_workers={a.loader_workers}",
        f"trainer.val_max_batches={a.val_batches}",
        "trainer.val_batch_size=64",
        # epochs of a set still being written last a few steps: validate on a step interval
        "trainer.val_every_epochs=0",
        f"trainer.val_every_steps={a.val_every_steps}",
        # the shipped weights scored first on the same frames: the run's curve has its start
        # (run 16's first point came 300 steps in) and best.pt keeps them unless beaten
        "trainer.val_at_start=true",
        "trainer.sync_free_steps=true",
        f"trainer.compile_submodules={a.compile}",
        "trainer.progress=false",
        "trainer.log_every=50",
        f"trainer.lr_multipliers={a.lr_multipliers}",
        *([] if is_voter(a) or (is_baseline(a) and not BASELINE_DEFAULTS[a.exp]["betas"])
          else [f"loss.param_terms.betas={a.betas_weight}"]),
        # the shipped RCNet's weights and inference settings (its validation votes as it does)
        *(["init.source_prefix=rcnet.", *voter_settings()] if is_voter(a) else []),
        "max_points_per_scene=400000",
        *a.train_extra,
    ]
    memory = [
        *common,
        f"exp_name={run_name(a)}",
        "loader=memory",
        f"loader.min_samples={a.min_samples}",
        f"loader.decode_workers={a.decode_workers}",
        *(["loader.rcnet_once=true"] if a.rcnet_once else []),
        *([f"loader.rcnet_new_per_step={a.rcnet_new_per_step}"] if a.rcnet_new_per_step else []),
        # the rooms' grids ride the in-memory path only: the fallback trains without the term
        *(["loader.scene_sdf=true", f"loss.param_terms.penetration={a.scene_penetration}"]
          if a.scene_penetration > 0 else []),
    ]
    loader = [*common, f"exp_name={run_name(a)}_dl"]
    return [shlex.join(memory), shlex.join(loader)]


def pick_weights(root: Path, name: str, run: str = "sahmr_param") -> str:
    """Shell words that set ``$src`` to the training's checkpoint ``name`` (``best.pt``,
    ``last.pt``) when the job starts: the DataLoader path's run exists only if the in-memory
    one failed, so it wins when present."""
    runs = root / "runs"
    in_memory = runs / run / "checkpoints" / name
    data_loader = runs / f"{run}_dl" / "checkpoints" / name
    return f"src={data_loader}; [ -f $src ] || src={in_memory};"


def export_flags(a: argparse.Namespace) -> list[str]:
    """``tools/export_checkpoint.py`` flags of every export: int8, with the parts the lease
    fine-tunes in float16 (``--export-fp16-under``; run 30: an int8 re-export drops a small-LR
    fine-tune's moves, most of them under a tenth of an int8 step); a baseline whole, int8 or
    float16 as `BASELINE_DEFAULTS` says."""
    if is_baseline(a):
        return ["--int8"] if BASELINE_DEFAULTS[a.exp]["int8"] else []
    return [
        "--int8",
        *(f"--fp16-under={path}" for path in a.export_fp16_under),
        *(f"--int8-under={path}" for path in a.export_int8_under),
    ]


def export_job(
    job: str,
    root: Path,
    name: str,
    dest: Path,
    flags: list[str],
    soft: bool = False,
    run: str = "sahmr_param",
    into: Path | None = None,
) -> Job:
    """The job ``job``: exports checkpoint ``name`` of the training ``run`` to ``dest``
    (``flags``) once the training has ended; with ``into`` (an SA-HMR checkpoint) the trained
    RCNet replaces that file's (``--rcnet``) and the rest is ``into``'s."""
    words = ["__SRC__"] if into is None else [str(into), "--rcnet", "__SRC__"]
    export = shlex.join([PY, "tools/export_checkpoint.py", *words, str(dest), *flags])
    export = export.replace("__SRC__", '"$src"', 1)
    return Job(
        job,
        ["bash", "-c", f"{pick_weights(root, name, run)} {export}"],
        after=["train"],
        kind="step",
        soft=soft,
    )


REFIT_TRAINING = "refit.pt"
"""The refitted network, training format (``tools/refit_head.py``'s output; its report beside
it as ``refit.json``)."""

REFIT_EXPORT = "sahmr_small_refit.pt"
"""The refitted network exported int8, as it would ship."""

LAST_EXPORT = "sahmr_small_last.pt"
"""The training's last weights, exported as the others (``export_last``; brought back, scored
off the lent machine)."""


def refit_jobs(a: argparse.Namespace, data: Path) -> list[Job]:
    """``refit`` (the trained network's head refitted on the GPU, `tools/refit_head.py`) and
    ``export_refit`` (int8). ``--refit-from last`` (default) refits the network as the training
    left it: run 19 found the GPU-trained encoder better while its head lost, so the encoder at
    the end of its schedule is the one to keep. ``best`` refits the best-on-val weights, which
    are the shipped ones whenever the training never beat them (``val_at_start``): run 23's refit
    became a refit of the shipped head on fresh rooms that way."""
    out = a.root / REFIT_TRAINING
    if is_voter(a):  # the shipped mesh network behind the new RCNet (``export``)
        pick, after = f"src={a.root / export_names(a)[0]};", ["export"]
    else:
        pick, after = pick_weights(a.root, f"{a.refit_from}.pt"), ["train"]
    refit = [
        PY,
        "tools/refit_head.py",
        "$src",
        str(data),
        str(out),
        f"--device={a.refit_device}",
        f"--train-frames={a.refit_train_frames}",
        f"--val-frames={a.refit_val_frames}",
        f"--steps={a.refit_steps}",
        f"--batch={a.refit_batch}",
        f"--lr={a.refit_lr}",
        f"--val-every={a.refit_val_every}",
        f"--penetration={a.refit_penetration}",
        f"--betas-weight={a.betas_weight}",
        f"--cache-batch={a.refit_cache_batch}",
        f"--loader-workers={a.refit_loader_workers}",
    ]
    script = shlex.join(refit).replace("'$src'", '"$src"')  # the one word left unquoted
    return [
        Job(
            "refit",
            ["bash", "-c", f"{pick} {script}"],
            after=after,
            kind="train",
        ),
        Job(
            "export_refit",
            [
                PY,
                "tools/export_checkpoint.py",
                str(out),
                str(a.root / REFIT_EXPORT),
                *export_flags(a),
            ],
            after=["refit"],
            kind="step",
        ),
    ]


def data_seed_overrides(seed: int) -> list[str]:
    """``tools/make_dataset.py`` overrides of a lease's main set for ``--data-seed`` (none for
    0: the generator's defaults)."""
    if seed == 0:
        return []
    lo = TRAIN_ROOM_BASE + TRAIN_ROOMS_PER_KIND * seed
    return [f"seed={seed}", f"splits.train.seed_range=[{lo},{lo + TRAIN_ROOMS_PER_KIND}]"]


def eval_shard_overrides(a: argparse.Namespace, *splits: str) -> list[str]:
    """``tools/make_dataset.py`` overrides that write ``splits`` in ``--eval-shard-samples``
    shards (none for 0). One shard is set in one room, so small val and test shards set the
    scored frames in more rooms."""
    if a.eval_shard_samples <= 0:
        return []
    return [f"splits.{k}.samples_per_shard={a.eval_shard_samples}" for k in splits]


def build_jobs(a: argparse.Namespace) -> list[Job]:
    apply_exp_defaults(a)
    if a.data_seed is None:
        a.data_seed = fresh_data_seed()
    root, data, away = a.root, a.root / "data", a.root / "data_away"
    new_name, last_name = export_names(a)
    new, free = root / new_name, root / "sahmr_small_param_free.pt"
    into = SHIPPED if is_voter(a) else None  # a voter lease's RCNet goes into the shipped file
    ev = root / "eval"
    # hydra's command line takes its flags (--config-name) before the overrides: a flag
    # between overrides leaves the ones after it unrecognised (the away set of the first
    # seeded lease, 2026-12-06, failed so)
    gen_tool = [*ONE_THREAD, *NICE, PY, "tools/make_dataset.py"]
    gen_common = [f"samples_per_shard={a.samples_per_shard}", "resume=true", "sdf_voxel_size=0.04"]
    gen = [*gen_tool, *gen_common]
    splits = [f"splits.{k}.fraction={v}" for k, v in zip(("train", "val", "test"), a.fractions)]
    splits += data_seed_overrides(a.data_seed)
    splits += eval_shard_overrides(a, "val", "test")
    splits += a.data_extra  # after the lease's own: the user's word wins
    gen_cmd = [*gen, f"out_dir={data}", f"num_samples={a.num_samples}", f"workers={a.gen_workers}"]
    jobs = [
        Job("data", [*gen_cmd, *splits], kind="train"),  # runs beside the training
        Job(
            "data_away",
            [
                *gen_tool,
                *a.away_overrides,
                *gen_common,
                f"out_dir={away}",
                f"num_samples={a.away_samples}",
                f"workers={a.away_workers}",
                *eval_shard_overrides(a, "test"),  # the away set is a test split alone
                *([f"seed={a.data_seed + 1}"] if a.data_seed else []),
            ],
            kind="train",
        ),
        Job("eval_splits", [PY, __file__, "--wait-for-splits", str(data)], kind="step"),
        # the test and away rooms' SDF grids, built beside the training (soft: a scoring
        # builds what is missing itself)
        Job(
            "warm_sdfs",
            [*NICE, PY, __file__, "--warm-sdfs", str(data), "test"],
            after=["eval_splits"],
            soft=True,
        ),
        Job(
            "warm_sdfs_away",
            [*NICE, PY, __file__, "--warm-sdfs", str(away), "test"],
            after=["data_away"],
            soft=True,
        ),
        Job(
            # where a training step's device time goes, on this run's val frames, before the
            # training takes the GPU (RCNet + mesh network, eager; with --exp sahmr_small_e2e
            # the benchmark's sahmr_small_e2e, the recipe this lease trains)
            "profile",
            [
                PY,
                "tools/benchmark_train.py",
                f"--data={data}",
                "--split=val",
                f"--out={root / 'profile'}",
                "--paths=new",
                "--methods=" + ("sahmr_small_e2e" if a.exp == "sahmr_small_e2e"
                                else "sahmr_small_rcnet"),
                "--seconds=4",
                "--warmup=3",
                "--no-compile",
                "--profile",
                "--decode-workers=4",
                "--budget-minutes=2",
                "--max-points-per-scene=400000",
            ],
            after=["eval_splits"],
            kind="step",
        ),
        Job(
            "gpu_util",
            [
                "bash",
                "-c",
                # samples while training runs, then ends (a sampler outliving the training kept
                # the graph from collecting its results); [t] keeps pgrep off this shell
                "sleep 30; while pgrep -f '[t]ools/train.py' > /dev/null; do nvidia-smi "
                "--query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader; "
                "sleep 2; done",
            ],
            after=["eval_splits", "profile"],
            kind="step",
            soft=True,
        ),
        Job(
            "train",
            [
                "bash",
                "-c",
                # the generator stops with the training (resume=true continues it later)
                f"{' || '.join(train_calls(a, data))}; rc=$?; "
                f"pkill -f '[m]ake_dataset.py .*out_dir={data} '; exit $rc",
            ],
            after=["eval_splits", "profile"],
            needs=[start] if (start := start_weights(a)) else [],
            soft=True,  # a failed profile does not hold the training back
        ),
        export_job("export", root, "best.pt", new, export_flags(a), run=run_name(a), into=into),
        # soft: a training that failed late still leaves its last.pt
        export_job(
            "export_last", root, "last.pt", root / last_name, export_flags(a), True, run_name(a),
            into,
        ),
    ]
    if is_voter(a):
        # the trained RCNet alone in float16: the exports above store it int8, which may drop a
        # continuation's small moves (run 30); this copy lets other precisions be tried later
        jobs.append(export_job("export_rcnet", root, "best.pt", root / VOTER_EXPORT, [], True,
                               run_name(a)))  # fmt: skip
    # what is scored: checkpoint, the job that writes it, and where (val, test, away)
    every = ("val", "test", "away")
    scored = {"new": (new, "export", ("val",) if a.new_scores == "val" else every)}
    if continued := baseline_init(a):  # the baseline it continues, on the same val frames
        scored["shipped_baseline"] = (continued, None, ("val",))  # (the ship rule)
    scored["shipped"] = (SHIPPED, None, every)
    if a.plain_scores:  # without the limb bending, as every lease up to run 37 scored
        scored["shipped_plain"] = (SHIPPED, None, ("test", "away"))
    if a.refit_train_frames > 0:
        jobs += refit_jobs(a, data)
        scored["refit"] = (root / REFIT_EXPORT, "export_refit", every)
    if a.free_form:
        jobs.append(
            Job(
                "free_copy",
                [PY, __file__, "--free-form-copy", str(new), str(free)],
                after=["export"],
                kind="step",
            )
        )
        scored["free"] = (free, "free_copy", ("test",))
    for split, dataset, deps in (
        ("val", data, ["eval_splits"]),
        ("test", data, ["eval_splits"]),
        ("test", away, ["data_away"]),
    ):
        tag = "away" if dataset == away else split
        for name, (ckpt, dep, tags) in scored.items():
            if tag not in tags:
                continue
            extra = {
                # frames spread over the split (every room), batches of 32 (eval_cmd)
                "val": ["frames=1280", "scene_metrics=false"],
                "test": [f"frames={32 * a.test_batches}"],
                "away": [],
            }[tag]
            if name.endswith("_plain"):
                extra = [*extra, "scene_depenetrate=false"]
            jobs.append(
                Job(
                    f"eval_{name}_{tag}",
                    eval_cmd(
                        ckpt,
                        dataset,
                        ev / f"{name}_{tag}",
                        split,
                        "bf16=true",
                        *extra,
                    ),
                    after=deps
                    + ([dep] if dep else [])
                    + (
                        # after the export too: then the new file's val, listed first, is
                        # scored first (runs 44 and 47 scored the shipped file first and
                        # ran out of time before the new one's)
                        ["train", "export"]
                        if name.startswith("shipped") and a.shipped_scores == "after"
                        else []
                    ),
                    needs=[ckpt],
                    kind="eval",
                    soft=name.startswith("shipped"),
                )
            )
    skip = set()
    if a.away_samples == 0:
        skip |= {"data_away"}
    if a.no_profile:
        skip |= {"profile"}
    if is_baseline(a):
        skip |= {"export_last"}  # best-on-val only: HMR's float16 file alone is 4 parts
    # jobs waiting for a dropped data set go too; those waiting for the profile just start
    lost_inputs = skip - {"profile"}
    kept = [j for j in jobs if j.name not in skip and not set(j.after) & lost_inputs]
    for j in kept:
        j.after = [d for d in j.after if d not in skip]
    return kept


DATA_SEED_LIMIT = 100_000


def fresh_data_seed() -> int:
    """A data seed in [1, DATA_SEED_LIMIT) from the clock (one lease's minute)."""
    return 1 + int(time.time() // 60) % (DATA_SEED_LIMIT - 1)


def parser() -> argparse.ArgumentParser:
    """The command line (`main`'s)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", type=Path, default=REPO / "outputs" / "gpu")
    p.add_argument("--status", action="store_true", help="print the status and exit")
    p.add_argument("--free-form-copy", nargs=2, type=Path, metavar=("SRC", "DST"))
    p.add_argument("--wait-for-splits", type=Path, metavar="DATA", help=argparse.SUPPRESS)
    p.add_argument("--warm-sdfs", nargs=2, metavar=("DATA", "SPLIT"), help=argparse.SUPPRESS)
    p.add_argument("--num-samples", type=int, default=100000)
    p.add_argument("--samples-per-shard", type=int, default=250)
    p.add_argument(
        "--fractions",
        type=float,
        nargs=3,
        default=[0.97, 0.015, 0.015],  # run 25: 6 val rooms (0.01 gave run 23 only 4)
        metavar=("TRAIN", "VAL", "TEST"),
    )
    p.add_argument("--data-seed", type=int, default=None,
                   help="seed of the lease's data (train rooms, bodies, cameras); default: "
                   "drawn from the clock; 0: the generator's defaults (the same set as every "
                   "lease up to run 33)")  # fmt: skip
    p.add_argument("--eval-shard-samples", type=int, default=50,
                   help="shard size of the val and test splits (and the away set): one room "
                   "per shard, so at 50 the 1,280 val frames are set in about 19 of the 30 val "
                   "rooms, against 6 at the dataset's 250; 0: the dataset's")  # fmt: skip
    p.add_argument("--away-samples", type=int, default=300, help="0: no away set")
    p.add_argument("--gen-workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--away-workers", type=int, default=4)
    p.add_argument("--loader-workers", type=int, default=10)
    p.add_argument("--decode-workers", type=int, default=3)
    p.add_argument("--min-samples", type=int, default=3000, help="train samples before step 1")
    p.add_argument("--train-minutes", type=float, default=14.0)
    p.add_argument("--max-steps", type=int, default=2000, help="also the LR schedule's length")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)  # runs 16, 23, 25 (run 9: 2e-4 e2e lost)
    p.add_argument(
        "--lr-multipliers",
        default=None,
        help="trainer.lr_multipliers (a frozen RCNet takes none; default: SA-HMR "
        "{mesh_net.param_head:1.5}, a baseline {})",
    )
    p.add_argument("--betas-weight", type=float, default=0.5, help="loss.param_terms.betas")
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--val-batches", type=int, default=12, help="val batches of 64 per check")
    p.add_argument("--val-every-steps", type=int, default=250, help="validate every N steps")
    p.add_argument("--test-batches", type=int, default=30, help="test batches of 32 scored")
    p.add_argument("--exp", default="sahmr_small_finetune",
                   help="training experiment: SA-HMR's (from the shipped weights) or a baseline "
                   f"({', '.join(BASELINE_DEFAULTS)}: from its shipped weights if any, else "
                   "random ones)")  # fmt: skip
    p.add_argument("--from-scratch", action="store_true",
                   help="a baseline starts from random weights even when one is shipped "
                   "(default: it continues its shipped checkpoint, sahmr/checkpoints/<exp>.pt)")
    p.add_argument(
        "--shipped-scores",
        choices=("after", "beside"),
        default="after",
        help="when the shipped checkpoint is scored: after the training (default), or beside it "
        "(run 23: its three scorings shared the GPU and the cores with the training and the "
        "generator for 13 of its 14 minutes)",
    )
    p.add_argument(
        "--new-scores",
        choices=("all", "val"),
        default=None,
        help="val: the trained network scored on val alone (a lease that refits its head ships "
        "the refit or nothing; its test and away scores cost minutes); default: val, a "
        "baseline all",
    )
    p.add_argument("--free-form", action="store_true", help="also score the free-form output")
    p.add_argument("--plain-scores", action="store_true",
                   help="also score the shipped SA-HMR on test and away without bending its "
                   "penetrating bodies' joints out of the scan (scene_depenetrate=false; the "
                   "bending is the evaluator's default since 2026-12-07), as every lease up to "
                   "run 37 scored")  # fmt: skip
    p.add_argument("--no-profile", action="store_true", help="no step profile before training")
    p.add_argument(
        "--compile",
        default=None,
        help="trainer.compile_submodules ([] for none: a short run saves the compile time; "
        "default: the experiment's static-shape parts)",
    )
    p.add_argument("--refit-train-frames", type=int, default=None,
                   help="refit the trained network's head on the GPU on this many fresh train "
                   "frames (0: no refit; default 8,000, a baseline 0)")
    p.add_argument(
        "--refit-from",
        choices=("last", "best"),
        default="last",
        help="the training's weights whose head is refitted: last (the trained encoder) or "
        "best on val (the shipped weights when the training never beat them)",
    )
    p.add_argument("--refit-val-frames", type=int, default=768)
    p.add_argument("--refit-steps", type=int, default=600)
    p.add_argument("--refit-batch", type=int, default=64)
    p.add_argument("--refit-lr", type=float, default=3e-5)
    p.add_argument("--refit-val-every", type=int, default=25)
    p.add_argument("--refit-penetration", type=float, default=30.0,
                   help="the scene term's weight (runs 18 and 19: 30)")
    p.add_argument("--refit-cache-batch", type=int, default=64)
    p.add_argument("--refit-loader-workers", type=int, default=8)
    p.add_argument("--refit-device", default="cuda", help="cpu: a smoke run off the GPU")
    p.add_argument("--away-overrides", nargs="*", default=list(AWAY_OVERRIDES))
    p.add_argument("--export-fp16-under", nargs="*", default=None,
                   help="submodule paths exported in float16 (what the lease fine-tunes)")
    p.add_argument("--export-int8-under", nargs="*", default=None,
                   help="paths inside those exported int8 again (freeze them in training: "
                   "an int8 export drops small moves); the checkpoint stays under 20 MB")
    p.add_argument("--train-extra", nargs="*", default=[])
    p.add_argument("--data-extra", nargs="*", default=[],
                   help="tools/make_dataset.py overrides of the lease's main set (a "
                   "camera.* override reaches every split, so val and test then differ from "
                   "other leases'; splits.train.* only the training frames), e.g. "
                   "splits.train.hidden_fraction=0.5")  # fmt: skip
    p.add_argument("--scene-penetration", type=float, default=0.0,
                   help="loss.param_terms.penetration on the rooms' SDF grids (0: off)")
    p.add_argument("--rcnet-once", action="store_true",
                   help="the frozen RCNet runs once per training sample, its outputs stored "
                   "(loader.rcnet_once; in-memory path only, exp=sahmr_small_finetune)")
    p.add_argument("--rcnet-new-per-step", type=int, default=0,
                   help="with --rcnet-once: at most this many frames new to the store in a "
                   "step, the rest swapped for stored ones (loader.rcnet_new_per_step; 0: "
                   "no cap)")  # fmt: skip
    p.add_argument("--max-minutes", type=float, default=27.0, help="stop everything after this")
    p.add_argument("--max-evals", type=int, default=MAX_EVALS,
                   help="scorings running at once (`MAX_EVALS`)")  # fmt: skip
    p.add_argument("--allow-slow-raycast", action="store_true",
                   help="start even without embreex (the generator then crawls: run 20)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    if a.refit_train_frames is not None and a.refit_train_frames < 0:
        p.error("--refit-train-frames must be >= 0")
    if a.max_evals < 1:
        p.error("--max-evals must be >= 1")
    try:
        apply_exp_defaults(a)
    except ValueError as err:
        p.error(str(err))
    if a.data_seed is not None and not 0 <= a.data_seed < DATA_SEED_LIMIT:
        p.error(f"--data-seed must be in [0, {DATA_SEED_LIMIT})")
    if a.eval_shard_samples < 0:
        p.error("--eval-shard-samples must be >= 0")
    if a.free_form_copy:
        free_form_copy(*a.free_form_copy)
        return 0
    if a.wait_for_splits:
        wait_for_splits(a.wait_for_splits, ["val", "test"])
        return 0
    if a.warm_sdfs:
        data, split = a.warm_sdfs
        print(f"SDF grids of {len(warm_sdfs(Path(data), split))} rooms ready", flush=True)
        return 0
    a.root = a.root.resolve()
    if a.status:
        status = a.root / "status.json"
        print(status.read_text() if status.is_file() else "no status yet")
        return 0
    from sahmr.geometry.raycast import fast_raycast_available

    if not (fast_raycast_available() or a.allow_slow_raycast):
        p.error("embreex is not installed: the generator would fall back to trimesh's slow ray "
                "tracer and write no shard in the lease (install it as the README's GPU "
                "section says, or pass --allow-slow-raycast)")  # fmt: skip
    a.root.mkdir(parents=True, exist_ok=True)
    jobs = build_jobs(a)  # draws the data seed unless given
    print(f"data seed {a.data_seed} (rerun this lease's data with --data-seed {a.data_seed})",
          flush=True)  # fmt: skip
    code = run(a, jobs)
    final = collect(a.root).parent
    for name in (*export_names(a), REFIT_EXPORT, "refit.json"):
        if (a.root / name).is_file():
            shutil.copy2(a.root / name, final / name)
    return code


if __name__ == "__main__":
    sys.exit(main())
