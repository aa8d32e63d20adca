#!/usr/bin/env bash
# Fetches the containerd binaries the CRI test suite runs besides the system's 1.6
# (Debian 12): containerd 1.7 from Debian trixie and 2.1 from Debian sid, as plain files in
# a cache dir; nothing is installed and the system's apt state is not touched.
#
#   scripts/fetch-containerd.sh [CACHE_DIR]      (default: $HOME/.cache/wasmpod/containerd)
#
# For each version it writes CACHE_DIR/<version>/usr/bin/{containerd,ctr,...} and prints
# one line `<version> <bin dir>`. A version already in the cache is not fetched again.
# Uses a private apt sources list, lists dir and cache dir in a temp dir (`apt-get
# download` + `dpkg -x`). runc stays the system's (Debian 12) one.
set -euo pipefail

cache=${1:-${WASMPOD_CONTAINERD_CACHE:-$HOME/.cache/wasmpod/containerd}}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
arch=$(dpkg --print-architecture)

# version  suite  exact Debian package version. The exact version pins what the suite was
# verified with; when the suite moves on, the newest 1.7.* / 2.1.* of the suite is taken.
versions=(
  "1.7 trixie 1.7.24~ds1-6+deb13u1"
  "2.1 sid 2.1.9+ds1-5"
)

need=()
for entry in "${versions[@]}"; do
  read -r version _ _ <<<"$entry"
  [[ -x "$cache/$version/usr/bin/containerd" && -x "$cache/$version/usr/bin/ctr" ]] || need+=("$entry")
done

if ((${#need[@]})); then
  work=$(mktemp -d /tmp/wasmpod-fetch-containerd.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
  {
    echo "deb [signed-by=$keyring] http://deb.debian.org/debian trixie main"
    echo "deb [signed-by=$keyring] http://deb.debian.org/debian sid main"
  } >"$work/sources.list"
  apt_opts=(
    -o "Dir::Etc::sourcelist=$work/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache"
    -o "APT::Get::List-Cleanup=0"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=root"
  )
  echo "fetch-containerd: apt-get update (private lists in $work)" >&2
  apt-get "${apt_opts[@]}" update -qq >&2

  for entry in "${need[@]}"; do
    read -r version suite pinned <<<"$entry"
    available=$(apt-cache "${apt_opts[@]}" madison containerd |
      awk -v s="$suite/main" '$0 ~ s {print $3}')
    pick=""
    if grep -qxF "$pinned" <<<"$available"; then
      pick=$pinned
    else
      pick=$(grep -E "^${version//./\\.}\." <<<"$available" | head -n1 || true)
    fi
    if [[ -z "$pick" ]]; then
      echo "fetch-containerd: no containerd $version.* in $suite (have: ${available//$'\n'/ })" >&2
      exit 1
    fi
    echo "fetch-containerd: containerd $pick ($suite) -> $cache/$version" >&2
    (cd "$work/debs" && apt-get "${apt_opts[@]}" download -qq "containerd=$pick" >&2)
    deb=$(ls "$work/debs"/containerd_*.deb)
    tmp="$cache/.$version.tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    dpkg -x "$deb" "$tmp"
    echo "$pick" >"$tmp/VERSION"
    rm -rf "${cache:?}/$version"
    mv "$tmp" "$cache/$version"
    rm -f "$deb"
  done
fi

for entry in "${versions[@]}"; do
  read -r version _ _ <<<"$entry"
  echo "$version $cache/$version/usr/bin"
done
