#!/usr/bin/env bash
# Installs the system packages a target needs, only where they are missing.
#   scripts/bootstrap-system.sh run   - what the server needs (git, Node.js for Claude Code)
#   scripts/bootstrap-system.sh test  - plus filesystems, PostgreSQL, nginx, Chromium and a
#                                       single-node Slurm (slurm-wlm, munge; slurmdbd and
#                                       MariaDB's server and client, without the service
#                                       package, for its accounting) for the tests,
#                                       and wrk for the benchmarks
set -euo pipefail

want=(git:git node:nodejs npm:npm)
if [ "${1:-run}" = test ]; then
  want+=(mkfs.xfs:xfsprogs mkfs.btrfs:btrfs-progs openssl:openssl losetup:mount
         /usr/lib/postgresql/15/bin/initdb:postgresql-15 systemd-analyze:systemd
         nginx:nginx chromium:chromium chromedriver:chromium-driver wrk:wrk
         /usr/sbin/slurmctld:slurm-wlm /usr/sbin/munged:munge
         /usr/sbin/slurmdbd:slurmdbd /usr/sbin/mariadbd:mariadb-server-core
         mariadb:mariadb-client-core)
fi

missing=()
for pair in "${want[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing system packages: ${missing[*]} (install them, or run as root on Debian/Ubuntu)" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
# the packages' services (slurmdbd, PostgreSQL, nginx) are not started: the tests run
# daemons of their own, and a start that fails without systemd or without a configuration
# (slurmdbd's) would fail the install
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
