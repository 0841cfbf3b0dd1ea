#!/bin/sh
# Installs the system packages irbot's tests use when they are missing (as root, with apt),
# or stops with a line naming what to install. Arguments: redis-server, sshd, venv.
set -eu
missing=""
for need in "$@"; do
  case "$need" in
    redis-server) command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server" ;;
    sshd) { command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; } || missing="$missing openssh-server" ;;
    venv) missing="$missing python3-venv" ;;
  esac
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  exit 0
fi
echo "irbot needs these system packages:$missing. Install them (e.g. sudo apt-get install$missing) and run make again." >&2
exit 1
