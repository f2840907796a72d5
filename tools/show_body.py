#!/usr/bin/env python
"""Render the body model in standard poses to PNG (see sahmr/cli/show_body.py)."""

from sahmr.cli.show_body import main

if __name__ == "__main__":
    raise SystemExit(main())
