#!/bin/sh
# Makes cumulo/dashboard/static/vendor/novnc-rfb.min.js again from the npm registry: noVNC's
# RFB class and its imports, bundled and minified by esbuild without what the dashboard's
# console never uses (tools/build_novnc.mjs says what and why). The versions are pinned;
# the same versions give the same bytes (the sha256 in static/vendor/VERSIONS.txt).
# Needs node and npm; works in a temporary directory, outside the repository.
set -eu
NOVNC=1.7.0
ESBUILD=0.28.2
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../cumulo/dashboard/static/vendor/novnc-rfb.min.js"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --save-exact --no-audit --no-fund --loglevel=error \
    "@novnc/novnc@$NOVNC" "esbuild@$ESBUILD" >/dev/null
cp "$here/build_novnc.mjs" .
node build_novnc.mjs "$NOVNC" "$out"
