#!/usr/bin/env bash
# Prints where cargo puts a binary of this package: bin-path.sh PROFILE NAME
# (e.g. `bin-path.sh release spillway`). Honours CARGO_TARGET_DIR and
# build.target-dir, which move it off ./target; asks cargo rather than guess.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:?usage: bin-path.sh PROFILE NAME}
name=${2:?usage: bin-path.sh PROFILE NAME}
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [ -z "$target_dir" ]; then
  echo "bin-path.sh: cargo metadata did not name a target directory" >&2
  exit 1
fi
echo "$target_dir/$profile/$name"
