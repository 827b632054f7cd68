#!/usr/bin/env bash
# Builds the IDE into web/dist/, which is committed: `cargo build` embeds every
# file of it (crates/server/build.rs lists them) and needs no npm.
#
#   npm ci -> generate (starters, protocol types, validator) -> type-check
#   (tsc, fails on any error) -> bundle (esbuild, one chunk per editor mode)
#   -> check what dist/ holds.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
node scripts/gen-starters.mjs
node scripts/gen-protocol.mjs

# Every JavaScript file of src/ opts into checking (close-codes.gen.js,
# written by crates/proto's tests, too).
for f in src/*.js src/modes/*.js; do
  if [ "$(head -n 1 "$f")" != "// @ts-check" ]; then
    echo "web/build.sh: $f does not start with // @ts-check" >&2
    exit 1
  fi
done
npx tsc -p tsconfig.json --noEmit

rm -rf dist
mkdir -p dist
# app.js is the entry (the core); each dynamic import() (an editor mode) and
# the code shared between them becomes a chunk named <name>-<HASH>.js.
npx esbuild app=src/main.js app=src/app.css --bundle --splitting --format=esm --minify --target=es2022 \
  --legal-comments=none --charset=utf8 --log-level=warning --outdir=dist --chunk-names='[name]-[hash]'
cp src/index.html dist/index.html

# index.html, app.js, app.css, and hashed chunks only (no source maps, no fonts).
for need in index.html app.js app.css; do
  [ -f "dist/$need" ] || { echo "web/build.sh: dist/$need is missing" >&2; exit 1; }
done
for f in dist/*; do
  name="${f#dist/}"
  case "$name" in index.html | app.js | app.css) continue ;; esac
  if ! [[ -f "$f" && "$name" =~ ^[a-z0-9_]+-[A-Z0-9]{8}\.js$ ]]; then
    echo "web/build.sh: unexpected file in dist/: $name" >&2
    exit 1
  fi
done
ls -l dist | awk 'NR > 1 { n += 1; b += $5 } END { printf "web/build.sh: dist/ holds %d files, %d bytes\n", n, b }'
ls -l dist/index.html dist/app.js dist/app.css
