#!/usr/bin/env bash
# Installs the Claude Code CLI that package-lock.json pins into DIR/node_modules (`npm ci`),
# for every user to run and none to change: root's, mode 0755/0644 whatever the caller's
# umask. Not inside the checkout, which may lie where the jobs' users cannot reach (/root
# is 0700). Does nothing when DIR already holds this lock file's install.
#   scripts/install-agent.sh DIR      (run from the checkout)
set -euo pipefail

dir=${1:?usage: scripts/install-agent.sh DIR}
if [ -x "$dir/node_modules/.bin/claude" ] && [ -f "$dir/.installed" ] &&
   cmp -s package-lock.json "$dir/package-lock.json"; then
  exit 0
fi
scripts/bootstrap-system.sh run
umask 022
mkdir -p "$dir"
chmod 0755 "$dir"
rm -f "$dir/.installed"
install -m 0644 package.json package-lock.json "$dir/"
npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
touch "$dir/.installed"
