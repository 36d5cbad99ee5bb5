#!/usr/bin/env bash
# Test fixtures that need installing: the TypeScript check fixture's node_modules (cached: npm ci
# runs only when package-lock.json changed since the last install).
set -euo pipefail
cd "$(dirname "$0")/.."
# npm_vulnerable/ is only read by `npm audit` (lock file alone): nothing to install there.
for dir in tests/fixtures/checks/ts_project/; do
  stamp="$dir/node_modules/.deployflow-lock"
  if [ ! -f "$stamp" ] || ! cmp -s "$dir/package-lock.json" "$stamp"; then
    echo "fixtures: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --silent)
    cp "$dir/package-lock.json" "$stamp"
  fi
done
