#!/usr/bin/env python
"""Recover a body in a scanned room from an image (see sahmr/cli/demo.py, docs/demo.md)."""

from sahmr.cli.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
