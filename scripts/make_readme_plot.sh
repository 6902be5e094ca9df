#!/usr/bin/env bash
# Regenerate docs/headroom.png, the README's picture: the silent-overflow fixture before and after --fix.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fhe-lint tests/fixtures/brevitas/cnn_w6a6_overflow.onnx --select FHE001 --fix --fix-strategy bits -o "$tmp/fixed.onnx" \
  --plot docs/headroom.png --quiet
