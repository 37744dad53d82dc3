#!/bin/sh
# Build the release directory that install/install.sh downloads from:
#
#   DIR/<version>/rampart-linux-amd64   the static binary
#   DIR/<version>/SHA256SUMS            sha256sum(1) format
#   DIR/<version>/SHA256SUMS.sig        raw Ed25519 signature over SHA256SUMS (openssl pkeyutl -rawin)
#   DIR/latest                          the version, one line
#
# Usage: tools/release.sh --binary PATH --signing-key KEY.pem --out DIR [--version V]
# The version defaults to what `PATH version` prints ("rampart 0.1.0" -> "v0.1.0").
# The project's own signing key is kept offline by the release owner; its public half is pinned
# in install/install.sh (RELEASE_PUBLIC_KEY). Mirrors that build their own binaries sign with
# their own key, which users pass to the installer as INSTALL_RAMPART_PUBLIC_KEY.
set -eu

die() { echo "release.sh: $*" >&2; exit 1; }

binary="" key="" out="" version=""
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) [ $# -ge 2 ] || die "--binary requires a value"; binary="$2"; shift 2 ;;
        --signing-key) [ $# -ge 2 ] || die "--signing-key requires a value"; key="$2"; shift 2 ;;
        --out) [ $# -ge 2 ] || die "--out requires a value"; out="$2"; shift 2 ;;
        --version) [ $# -ge 2 ] || die "--version requires a value"; version="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ -n "$binary" ] || die "--binary PATH is required"
[ -n "$key" ] || die "--signing-key KEY.pem is required"
[ -n "$out" ] || die "--out DIR is required"
[ -f "$binary" ] || die "binary not found: $binary"
[ -r "$key" ] || die "signing key not readable: $key"
command -v openssl >/dev/null 2>&1 || die "openssl is required"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is required"

if [ -z "$version" ]; then
    printed=$("$binary" version 2>/dev/null | head -n 1) || die "could not run '$binary version'"
    version="v${printed##* }"
fi
case "$version" in
    v[0-9]*) ;;
    *) die "version must look like v1.2.3, got '$version'" ;;
esac
case "$version" in
    */*|*..*) die "version must not contain '/' or '..': $version" ;;
esac

# The key must be Ed25519: the installer verifies with exactly that algorithm.
openssl pkey -in "$key" -noout -text 2>/dev/null | grep -q '^ED25519 Private-Key' \
    || die "signing key is not an Ed25519 private key: $key"

dir="$out/$version"
mkdir -p "$dir"
# Write into a staging directory and move into place, so a mirror never serves a binary whose
# checksum or signature is not yet there.
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
cp "$binary" "$stage/rampart-linux-amd64"
chmod 0755 "$stage/rampart-linux-amd64"
(cd "$stage" && sha256sum rampart-linux-amd64 > SHA256SUMS)
openssl pkeyutl -sign -rawin -inkey "$key" -in "$stage/SHA256SUMS" -out "$stage/SHA256SUMS.sig" \
    || die "signing failed"
for f in rampart-linux-amd64 SHA256SUMS SHA256SUMS.sig; do
    mv -f "$stage/$f" "$dir/$f"
done
printf '%s\n' "$version" > "$stage/latest"
mv -f "$stage/latest" "$out/latest"
echo "release.sh: wrote $dir ($(cut -d' ' -f1 "$dir/SHA256SUMS" | cut -c1-16)...) and $out/latest"
