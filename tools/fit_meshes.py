#!/usr/bin/env python
"""Fit SMPL-format parameters to a folder of body meshes (see sahmr/cli/fit_meshes.py)."""

from sahmr.cli.fit_meshes import main

if __name__ == "__main__":
    raise SystemExit(main())
