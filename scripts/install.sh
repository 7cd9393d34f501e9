#!/usr/bin/env bash
# Installs Claude Batch Server from this checkout as a systemd service, on Debian/Ubuntu
# (apt) or Rocky/RHEL (dnf). Run it as root; running it again changes nothing that is
# already in place, and updates what changed in the checkout.
#
#   scripts/install.sh                 install (or update) and start the service
#   scripts/install.sh --uninstall     remove it; DATA_DIR and the env file stay
#   scripts/install.sh --uninstall --purge    remove those too
#
# What goes where (the defaults):
#   /opt/claude-batch-server/venv          the Python package, in its own virtualenv
#   /opt/claude-batch-server/node_modules  the Claude Code CLI (npm ci, package-lock.json)
#   /etc/claude-batch-server/env           the configuration (mode 0600; kept on update)
#   /etc/systemd/system/claude-batch-server.service   from scripts/claude-batch-server.service
#   /etc/pam.d/claude-batch-server         the PAM service the server logs users in with
#   /var/lib/claude-batch-server           DATA_DIR: root's, mode 0711
# The server logs to standard output, so journald keeps its log (no log files to rotate).
set -euo pipefail
shopt -s inherit_errexit
umask 022 # users run the installed CLI and Python: nothing installed may be root-only

SERVICE="claude-batch-server"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
  cat <<EOF
usage: $0 [options]

  --prefix DIR     where the virtualenv and the Claude Code CLI go
                   (default /opt/$SERVICE)
  --data-dir DIR   DATA_DIR (default /var/lib/$SERVICE)
  --source DIR     the checkout to install from (default: the one holding this script)
  --root DIR       install into DIR as if it were /: /etc, /opt and /var/lib under DIR,
                   and every installed file names those paths (for tests and images);
                   implies --no-start
  --python PATH    the Python (3.11 or newer) for the virtualenv (default: found on PATH)
  --claude PATH    use this Claude Code CLI and do not install one with npm
  --no-packages    do not install missing system packages
  --no-start       do not enable or (re)start the service
  --uninstall      remove the installation; DATA_DIR and the env file are kept
  --purge          with --uninstall: remove DATA_DIR and the env file as well
  -h, --help       this text
EOF
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}
say() { echo "install.sh: $*"; }

prefix="" data_dir="" root="" source_dir="" python="" claude=""
packages=1 start=1 action=install purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift ;;
    --data-dir) data_dir="${2:?--data-dir needs a directory}"; shift ;;
    --source) source_dir="${2:?--source needs a directory}"; shift ;;
    --root) root="${2:?--root needs a directory}"; shift ;;
    --python) python="${2:?--python needs a path}"; shift ;;
    --claude) claude="${2:?--claude needs a path}"; shift ;;
    --no-packages) packages=0 ;;
    --no-start) start=0 ;;
    --uninstall) action=uninstall ;;
    --purge) purge=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
  shift
done

absolute() { # an absolute path without a trailing slash, whether or not it exists yet
  case "$1" in
    /*) ;;
    *) die "not an absolute path: $1" ;;
  esac
  # the paths go into the unit file and the env file as they are
  [[ "$1" =~ ^[A-Za-z0-9_./+-]+$ ]] || die "use a path of letters, digits and ._+-/ only: $1"
  local path="${1%/}"
  echo "${path:-/}"
}

[ "$(id -u)" -eq 0 ] || die "run me as root: the server runs every job as its user"
[ "$purge" -eq 0 ] || [ "$action" = uninstall ] || die "--purge goes with --uninstall"
if [ -n "$root" ]; then
  root="$(absolute "$root")"
  start=0
fi
[ "$root" = / ] && root=""
prefix="$(absolute "${prefix:-$root/opt/$SERVICE}")"
data_dir="$(absolute "${data_dir:-$root/var/lib/$SERVICE}")"
source_dir="$(cd "${source_dir:-$HERE/..}" && pwd)"
config_dir="$root/etc/$SERVICE"
env_file="$config_dir/env"
unit_file="$root/etc/systemd/system/$SERVICE.service"
pam_file="$root/etc/pam.d/$SERVICE"
state_dir="$prefix/.install" # what install.sh put there: stamps, and its mark on $prefix

for dir in "$prefix" "$data_dir"; do
  case "$dir" in
    / | /opt | /var | /var/lib | /usr | /usr/local | /etc | /home | /root | /tmp)
      die "refusing to use $dir as a directory of its own" ;;
  esac
done

systemd_running() { [ -z "$root" ] && [ -d /run/systemd/system ]; }

# ---- system packages ----------------------------------------------------------------------

good_python() { # Python 3.11+ with venv and ensurepip (Debian splits them off)
  "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

find_python() {
  if [ -n "$python" ]; then
    good_python "$python" || die "$python is not a Python 3.11+ with venv"
    echo "$python"
    return
  fi
  local candidate
  for candidate in python3 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null && good_python "$candidate"; then
      command -v "$candidate"
      return
    fi
  done
  return 1
}

node_ok() { # Claude Code needs Node.js 18 or newer (npm runs its install script)
  command -v node >/dev/null && command -v npm >/dev/null &&
    node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'
}

pam_unix_present() {
  compgen -G '/usr/lib*/security/pam_unix.so' >/dev/null ||
    compgen -G '/usr/lib/*/security/pam_unix.so' >/dev/null ||
    compgen -G '/lib*/security/pam_unix.so' >/dev/null ||
    compgen -G '/lib/*/security/pam_unix.so' >/dev/null
}

install_packages() {
  local missing=()
  command -v git >/dev/null || missing+=(git)
  command -v unshare >/dev/null || missing+=(util-linux)
  if command -v apt-get >/dev/null; then
    find_python >/dev/null || missing+=(python3 python3-venv)
    [ -n "$claude" ] || node_ok || missing+=(nodejs npm)
    pam_unix_present || missing+=(libpam-modules)
    [ ${#missing[@]} -eq 0 ] && return
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if ! find_python >/dev/null; then # Ubuntu 22.04: its python3 is 3.10
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3.11 python3.11-venv >/dev/null
    fi
  elif command -v dnf >/dev/null; then
    find_python >/dev/null || missing+=(python3.11)
    if [ -z "$claude" ] && ! node_ok; then
      # Rocky 8 and 9 default to an older Node.js stream; 20 is one of their modules
      dnf -y -q module enable nodejs:20 >/dev/null 2>&1 || true
      missing+=(nodejs npm)
    fi
    pam_unix_present || missing+=(pam)
    [ ${#missing[@]} -eq 0 ] && return
    say "installing ${missing[*]}"
    dnf -y -q install "${missing[@]}"
  else
    die "neither apt-get nor dnf here: install git, Python 3.11+ and Node.js 18+ yourself, then use --no-packages"
  fi
}

# ---- pieces -------------------------------------------------------------------------------
# They report what they changed in globals, never by their exit status: a function called
# as the condition of an `if` or `&&` would run with `set -e` switched off.

# Puts stdin at `target` with `mode`, owned by root, unless it is there already.
# wrote=1 when it wrote the file.
put_file() {
  local target="$1" mode="$2" tmp
  tmp="$(mktemp)"
  cat >"$tmp"
  wrote=0
  if [ -f "$target" ] && cmp -s "$tmp" "$target"; then
    chmod "$mode" "$target"
    chown root:root "$target"
  else
    install -D -m "$mode" -o root -g root "$tmp" "$target"
    wrote=1
    say "wrote $target"
  fi
  rm -f "$tmp"
}

source_stamp() { # what the Python package is built from
  (
    cd "$source_dir"
    find pyproject.toml README.md LICENSE src -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
      ! -path '*.egg-info/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -d' ' -f1
}

# The Python package in $prefix/venv, rebuilt only when the checkout changed.
# venv_changed=1 when it (re)installed it.
install_venv() {
  local venv="$prefix/venv" stamp build py
  venv_changed=0
  stamp="$(source_stamp)"
  if [ -x "$venv/bin/claude-batch-server" ] && "$venv/bin/python" -c '' 2>/dev/null &&
    [ "$(cat "$state_dir/source.sha256" 2>/dev/null)" = "$stamp" ]; then
    return
  fi
  py="$(find_python)" || die "no Python 3.11+ with venv found (install python3.11, or --python)"
  if ! "$venv/bin/python" -c '' 2>/dev/null; then
    "$py" -m venv --clear "$venv"
  fi
  # build from a copy: pip builds in the source tree, which is not ours to litter
  build="$(mktemp -d)"
  tar -C "$source_dir" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
    -cf - pyproject.toml README.md LICENSE src | tar -C "$build" -xf -
  say "installing the Python package into $venv"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q "$build"
  rm -rf "$build"
  echo "$stamp" >"$state_dir/source.sha256"
  venv_changed=1
}

# The Claude Code CLI, as package-lock.json pins it, in $prefix/node_modules.
# agent_changed=1 when it (re)installed it.
install_agent() {
  agent_changed=0
  if [ -n "$claude" ]; then
    [ -x "$claude" ] || die "--claude $claude is not an executable"
    return
  fi
  local lock_changed=0
  put_file "$prefix/package.json" 0644 <"$source_dir/package.json"
  lock_changed=$wrote
  put_file "$prefix/package-lock.json" 0644 <"$source_dir/package-lock.json"
  [ "$wrote" -eq 0 ] || lock_changed=1
  if [ "$lock_changed" -eq 0 ] && "$prefix/node_modules/.bin/claude" --version >/dev/null 2>&1; then
    return
  fi
  node_ok || die "Node.js 18+ and npm are needed for the Claude Code CLI (or use --claude)"
  say "installing the Claude Code CLI into $prefix/node_modules"
  npm ci --prefix "$prefix" --omit=dev --no-audit --no-fund --loglevel=error >/dev/null
  "$prefix/node_modules/.bin/claude" --version >/dev/null || die "the Claude Code CLI does not run"
  agent_changed=1
}

env_template() {
  cat <<EOF
# Claude Batch Server configuration (systemd EnvironmentFile: VAR=value lines).
# A commented line shows the default. Restart after a change:
#   systemctl restart $SERVICE
# install.sh wrote this file once and never changes it again.

# where the API listens. 127.0.0.1: put a TLS proxy in front (docker/nginx.conf is one);
# 0.0.0.0 serves every interface, in plain HTTP.
HOST=127.0.0.1
PORT=5000
# repositories, job workspaces, uploads, the SQLite database
DATA_DIR=$data_dir
# postgresql://user:password@host/db selects PostgreSQL; default: SQLite in DATA_DIR
#DATABASE_URL=sqlite:///$data_dir/server.db
# HMAC key for tokens, at least 32 characters; default: generated once, kept in DATA_DIR
#JWT_KEY=
# token lifetime in hours
#JWT_EXPIRY_HOURS=24
# jobs running at once, whole server
#MAX_CONCURRENT_JOBS=5
# jobs running at once for one user (0: no extra limit)
#MAX_CONCURRENT_JOBS_PER_USER=0
# hard limit on one job's run, in hours
#JOB_TIMEOUT_HOURS=24
# a finished job's workspace is removed this many days after it ended
#JOB_RETENTION_DAYS=7
# memory of one job, all its processes (512M, 4G; 0: no limit); default: the machine's
# memory divided by MAX_CONCURRENT_JOBS
#JOB_MEMORY_MAX=
# CPU cores one job may use, e.g. 1.5 (0: no cap)
#JOB_CPUS=0
# processes and threads of one job at once
#JOB_PIDS_MAX=4096
# transcript kept per job, in MB; past it the job is stopped and ends failed
#JOB_OUTPUT_MAX_MB=100
# free space kept on DATA_DIR (2G, 500M or a percentage); below it the job that grew most
# is stopped and new starts wait
#DATA_DIR_MIN_FREE=5%
# disk one job may add to its workspace where DATA_DIR offers per-job quotas (XFS or ext4
# with prjquota, btrfs with quotas enabled and COW_STRATEGY=btrfs); empty: DATA_DIR's size
# divided by MAX_CONCURRENT_JOBS, 0: no quota
#JOB_DISK_MAX=
# auto (Landlock where the kernel offers it), on (refuse to start without it) or off: a
# sandboxed job writes only its workspace, its Claude Code state and its own TMPDIR
#JOB_SANDBOX=auto
# local (jobs run on this host) or slurm (each job a Slurm job step, srun as its user; the
# nodes must see DATA_DIR and the users' homes at the same paths: see README)
#EXECUTOR=local
# with slurm: the partition for jobs, and further srun arguments (split as a shell would)
#SLURM_PARTITION=
#SLURM_ARGS=
# the Claude Code CLI
CLAUDE_COMMAND=$claude_command
# pam (the $SERVICE PAM service) or shadow (read SHADOW_FILE and PASSWD_FILE)
#AUTH_BACKEND=pam
# the account files for AUTH_BACKEND=shadow
#SHADOW_FILE=/etc/shadow
#PASSWD_FILE=/etc/passwd
# who may log in (comma lists); empty: every account with uid >= 1000 and a usable password
#ALLOWED_USERS=
#ALLOWED_GROUPS=
# members of this group see and manage every user's jobs and repositories
#ADMIN_GROUP=
# accept the account's stored crypt string in place of the password (as secret as it)
#ALLOW_HASH_LOGIN=false
# workspaces: auto, btrfs, reflink, overlay or copy (auto picks the best that works)
#COW_STRATEGY=auto
# json or console
#LOG_FORMAT=json
# addresses or networks (CIDR) whose X-Forwarded-For header is believed as the client's
# address (login throttling, the audit trail): a reverse proxy on another host or in a
# container. Empty: none. Trusting 127.0.0.1 would let every local user, who connects
# from loopback too, choose the address they are throttled and audited under.
#TRUSTED_PROXIES=
# every job's end is POSTed here, signed with WEBHOOK_SECRET (whsec_ and base64; empty:
# a key made once in DATA_DIR/webhook.key)
#WEBHOOK_URL=
#WEBHOOK_SECRET=
# hosts a job's own options.webhook may name (comma list); empty: none
#WEBHOOK_ALLOWED_HOSTS=

# Passed on to every job's Claude Code: every ANTHROPIC_* and CLAUDE_CODE_* variable.
# Without an API key, Claude Code uses each user's own login kept in their HOME.
#ANTHROPIC_API_KEY=
#ANTHROPIC_BASE_URL=
#CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
EOF
}

unit_text() {
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@DATA_DIR@|$data_dir|g" -e "s|@ENV_FILE@|$env_file|g" \
    "$HERE/$SERVICE.service"
}

# ---- install ------------------------------------------------------------------------------

do_install() {
  [ -f "$source_dir/pyproject.toml" ] || die "$source_dir is not a checkout of $SERVICE"
  [ -f "$HERE/$SERVICE.service" ] || die "$HERE/$SERVICE.service is missing"
  [ "$packages" -eq 0 ] || install_packages

  install -d -m 0755 "$prefix"
  install -d -m 0700 "$state_dir"
  install_venv
  install_agent
  claude_command="${claude:-$prefix/node_modules/.bin/claude}"

  # DATA_DIR: root's; others may only pass through it to their own workspaces
  install -d -m 0711 -o root -g root "$data_dir"
  chown root:root "$data_dir"
  chmod 0711 "$data_dir"

  # the configuration: written once, then the administrator's
  install -d -m 0755 "$config_dir"
  if [ ! -e "$env_file" ]; then
    put_file "$env_file" 0600 < <(env_template)
  fi

  local pam_source="$source_dir/src/claude_batch_server/pam/$SERVICE"
  if [ ! -e "$pam_file" ]; then
    put_file "$pam_file" 0644 <"$pam_source"
  elif ! cmp -s "$pam_source" "$pam_file"; then
    say "kept $pam_file: it differs from $pam_source (a local change?)"
  fi

  put_file "$unit_file" 0644 < <(unit_text)
  local unit_changed=$wrote

  if [ "$start" -eq 1 ] && systemd_running; then
    [ "$unit_changed" -eq 0 ] || systemctl daemon-reload
    systemctl enable --quiet "$SERVICE"
    if [ "$unit_changed" -eq 1 ] || [ "$venv_changed" -eq 1 ] || [ "$agent_changed" -eq 1 ]; then
      systemctl restart "$SERVICE"
    else
      systemctl start "$SERVICE" # nothing changed: a no-op when it runs
    fi
    say "$SERVICE is running; its log: journalctl -u $SERVICE"
  elif [ "$start" -eq 1 ]; then
    say "systemd is not running here: start $prefix/venv/bin/claude-batch-server serve yourself"
  fi
  say "installed; the configuration is $env_file"
}

# ---- uninstall ----------------------------------------------------------------------------

do_uninstall() {
  if [ -d "$prefix" ] && [ ! -d "$state_dir" ]; then
    die "$prefix was not made by install.sh: remove it yourself"
  fi
  if systemd_running && [ -e "$unit_file" ]; then
    systemctl disable --now --quiet "$SERVICE" || true
  fi
  if [ -e "$unit_file" ]; then
    rm -f "$unit_file"
    say "removed $unit_file"
    ! systemd_running || systemctl daemon-reload
  fi
  local pam_source="$source_dir/src/claude_batch_server/pam/$SERVICE"
  if [ -e "$pam_file" ]; then
    if [ "$purge" -eq 1 ] || cmp -s "$pam_source" "$pam_file"; then
      rm -f "$pam_file"
      say "removed $pam_file"
    else
      say "kept $pam_file: it differs from $pam_source (--purge removes it)"
    fi
  fi
  if [ -d "$prefix" ]; then
    rm -rf "$prefix"
    say "removed $prefix"
  fi
  if [ "$purge" -eq 1 ]; then
    # never into what is mounted below DATA_DIR (a workspace of a server still running)
    rm -rf --one-file-system "$data_dir" ||
      die "could not remove all of $data_dir: unmount what is mounted below it, then again"
    rm -f "$env_file"
    rmdir "$config_dir" 2>/dev/null || true
    say "removed $data_dir and $env_file"
  else
    say "kept $data_dir and $env_file (--purge removes them)"
  fi
}

if [ "$action" = install ]; then
  do_install
else
  do_uninstall
fi
