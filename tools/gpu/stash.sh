#!/usr/bin/env bash
# Slims the working tree for the lease's first call, which carries the spconv bundle.
#
# Everything one device call carries must fit in 64 MiB: the working tree plus its carry.
# .gpu (the bundle, ~43 MB) leaves room for a tree of ~23.7 MB, and the shipped checkpoints
# (SA-HMR run 31: 19.5 MB; METRO small run 35: 7.2 MB) do not fit beside it. The install call
# needs neither the checkpoints nor the docs' pictures; the lease's start call, which carries
# only .whl (15 MB), does.
#
#   bash tools/gpu/stash.sh out   # before call 1 (bash .gpu/install.sh, carry .gpu)
#   bash tools/gpu/stash.sh in    # before call 2 (lease.sh start, carry .whl)
#
# `out` moves the files to $STASH_DIR (default /tmp/sahmr_stash) and refuses to overwrite a
# stash; `in` moves them back and refuses to overwrite a file. STASH_ROOT (default: this
# repository) is for tests.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=${STASH_ROOT:-$(cd "$here/../.." && pwd)}
stash=${STASH_DIR:-/tmp/sahmr_stash}
items=(sahmr/checkpoints docs/img)  # the shipped checkpoints (SA-HMR, METRO) and pictures

case "${1:-}" in
    out)
        [ -e "$stash" ] && { echo "stash.sh: $stash exists: run 'stash.sh in' first" >&2; exit 2; }
        for item in "${items[@]}"; do
            [ -e "$root/$item" ] || { echo "stash.sh: $root/$item is missing" >&2; exit 2; }
        done
        for item in "${items[@]}"; do
            mkdir -p "$stash/$(dirname "$item")"
            mv "$root/$item" "$stash/$item"
        done
        echo "moved ${items[*]} to $stash" ;;
    in)
        [ -d "$stash" ] || { echo "stash.sh: no stash at $stash" >&2; exit 2; }
        for item in "${items[@]}"; do
            [ -e "$root/$item" ] && { echo "stash.sh: $root/$item exists: not overwritten" >&2; exit 2; }
        done
        for item in "${items[@]}"; do
            mv "$stash/$item" "$root/$item"
        done
        rm -rf "$stash"
        echo "restored ${items[*]}" ;;
    *) echo "usage: $0 out|in" >&2; exit 2 ;;
esac
