#!/usr/bin/env bash
# Regenerate docs/review.png: the review report of the demo run, rendered by headless Chromium.
# Needs the Debian packages chromium (and a few minutes of CPU for `emlc demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
emlc demo --out "$work/demo" --quiet
emlc review "$work/demo/run" --out "$work/review.html"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$work/profile" --hide-scrollbars \
  --window-size=1280,1750 --screenshot="$work/shot.png" "file://$work/review.html"
python -c "from PIL import Image; Image.open('$work/shot.png').convert('RGB').quantize(256, dither=Image.Dither.NONE).save('docs/review.png', optimize=True)"
