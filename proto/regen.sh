#!/bin/sh
# Regenerates proto/k8s.desc, proto/gosemantics.txt and refreshes the vendored
# fixtures in proto/testdata/ from upstream Kubernetes sources as packaged by
# Debian (golang-k8s-{api,apimachinery,apiextensions-apiserver}-dev, in sid).
#
# Usage: proto/regen.sh [GOCODE_SRC]
#   GOCODE_SRC  a tree holding k8s.io/{api,apimachinery,apiextensions-apiserver};
#               default: download the three .debs from Debian sid into a temp dir.
# Needs: python3, protoc, and (without GOCODE_SRC) apt-get + dpkg-deb.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=${1:-}
if [ -z "$src" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # A private apt state so the machine's sources and lists stay untouched.
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  echo "deb http://deb.debian.org/debian sid main" > "$work/sources.list"
  apt_opts="-o Dir::Etc::SourceList=$work/sources.list -o Dir::Etc::SourceParts=/nonexistent \
    -o Dir::State::Lists=$work/lists -o Dir::Cache=$work/cache"
  # shellcheck disable=SC2086
  apt-get $apt_opts update >/dev/null
  # shellcheck disable=SC2086
  (cd "$work" && apt-get $apt_opts download golang-k8s-api-dev golang-k8s-apimachinery-dev \
    golang-k8s-apiextensions-apiserver-dev)
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
  src=$work/root/usr/share/gocode/src
fi
python3 "$here/regen.py" "$src"
for f in "$here"/testdata/*.pb; do
  name=$(basename "$f" .pb)
  for dir in k8s.io/api/testdata/HEAD k8s.io/apiextensions-apiserver/pkg/apis/testdata/HEAD; do
    if [ -f "$src/$dir/$name.pb" ]; then
      cp "$src/$dir/$name.pb" "$src/$dir/$name.json" "$here/testdata/"
    fi
  done
done
echo "regenerated from $src"
