"""Inference on custom scenes: camera/bbox files, the one-image pipeline, output files.

See docs/demo.md. Modules, in the order a run uses them: `sahmr.inference.camera_io` (camera
and bbox files), `sahmr.inference.scene` (the scan: loaded, checked, down-sampled),
`sahmr.inference.frames` (each image: read, checked, cropped into model inputs),
`sahmr.inference.method` (the checkpoint that runs), `sahmr.inference.pipeline` (the run:
scan + image -> `FramePrediction`), `sahmr.inference.refine` (optional scene fit),
`sahmr.inference.outputs` (files, summaries, all-or-nothing output folders); beside them
`sahmr.inference.errors` (input checks), `sahmr.inference.images` (image files) and
`sahmr.inference.timing` (stage timer).
"""
