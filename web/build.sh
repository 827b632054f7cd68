#!/usr/bin/env bash
# Builds the IDE into web/dist/ (index.html, app.js, app.css), which is
# committed: `cargo build` embeds those three files and needs no npm.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
node scripts/gen-starters.mjs
rm -rf dist
mkdir -p dist
npx esbuild src/main.js --bundle --minify --format=iife --target=es2020 \
  --legal-comments=none --charset=utf8 --log-level=warning --outfile=dist/app.js
cp src/index.html dist/index.html
# Exactly these three files, nothing else (no source maps, no fonts).
actual="$(cd dist && ls -A | sort | tr '\n' ' ')"
if [ "$actual" != "app.css app.js index.html " ]; then
  echo "web/build.sh: unexpected files in dist/: $actual" >&2
  exit 1
fi
ls -l dist
