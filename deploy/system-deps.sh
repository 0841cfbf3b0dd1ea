#!/bin/sh
# Installs the system packages irbot's tests use when they are missing (as root, with apt),
# or stops with a line naming what to install. Arguments: redis-server, sshd, kubectl, mkfs.ext4, venv.
set -eu
missing=""
for need in "$@"; do
  case "$need" in
    redis-server) command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server" ;;
    sshd) { command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; } || missing="$missing openssh-server" ;;
    # kubectl renders deploy/k8s in tests/test_k8s.py. The package is named "kubectl" in the Kubernetes
    # and Google Cloud apt repositories; Debian's own archive ships it as kubernetes-client (below).
    kubectl) command -v kubectl >/dev/null 2>&1 || missing="$missing kubectl" ;;
    # mkfs.ext4 -d builds the small disk images the analysis tests read (standins/disk_images.py).
    mkfs.ext4) { command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ]; } || missing="$missing e2fsprogs" ;;
    venv) missing="$missing python3-venv" ;;
  esac
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  case " $missing " in
    *" kubectl "*)
      # Only after the update does apt know which name it has: without a kubectl package, take Debian's.
      if ! apt-cache show kubectl >/dev/null 2>&1; then
        packages=""
        for package in $missing; do
          [ "$package" = kubectl ] && package=kubernetes-client
          packages="$packages $package"
        done
        missing="$packages"
      fi ;;
  esac
  echo "installing:$missing"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  exit 0
fi
hint=""
case " $missing " in *" kubectl "*) hint=" (kubectl is kubernetes-client in Debian's own archive)" ;; esac
echo "irbot needs these system packages:$missing. Install them (e.g. sudo apt-get install$missing$hint) and run make again." >&2
exit 1
