"""Inference on custom scenes: camera/bbox files, the one-image pipeline, output files.

See docs/demo.md. Modules: `sahmr.inference.camera_io` (camera and bbox files),
`sahmr.inference.pipeline` (scan + image -> `FramePrediction`), `sahmr.inference.outputs`
(files, summaries, all-or-nothing output folders), `sahmr.inference.errors` (input checks).
"""
