#!/usr/bin/env bash
# deb.sh — build bin/nfclone_<version>_amd64.deb with dpkg-deb (no network,
# no fakeroot: --root-owner-group). Usage: scripts/deb.sh [OUTDIR]
#
# Contents: the static binary (/usr/bin/nfclone), the systemd unit, the
# sysusers entry, the example config (docs) and the config schema, man
# pages, bash/zsh/fish completions. Maintainer scripts (packaging/debian)
# create the nfclone user and never enable or start the service.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${1:-bin}"
GO="${GO:-go}"
ARCH=amd64

# Debian versions start with a digit: a tag v1.2.3 gives 1.2.3, an untagged
# commit 0.0~git<date>.<hash> (sorts before the first release).
describe="$(git describe --tags --always --dirty 2>/dev/null || echo dev)"
if [[ "$describe" =~ ^v?[0-9]+\.[0-9] ]]; then
	DEB_VERSION="${describe#v}"
	DEB_VERSION="${DEB_VERSION//-/+}"
else
	DEB_VERSION="0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date +%Y%m%d).${describe//-/+}"
fi
VERSION="${VERSION:-$describe}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/lib/sysusers.d" \
	"$root/usr/share/man/man8" "$root/usr/share/doc/nfclone/examples" "$root/usr/share/nfclone" \
	"$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
	"$root/usr/share/fish/vendor_completions.d"

CGO_ENABLED=0 GOOS=linux GOARCH="$ARCH" "$GO" build -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.version=$VERSION" -o "$root/usr/bin/nfclone" ./cmd/nfclone
bin="$root/usr/bin/nfclone"

sed 's|/usr/local/bin/nfclone|/usr/bin/nfclone|g' packaging/systemd/nfclone.service >"$root/lib/systemd/system/nfclone.service"
install -m 0644 packaging/systemd/nfclone.sysusers.conf "$root/usr/lib/sysusers.d/nfclone.conf"
install -m 0644 packaging/nfclone.schema.json "$root/usr/share/nfclone/nfclone.schema.json"
# shellcheck disable=SC2016 # a literal $schema
sed 's|\$schema=nfclone.schema.json|$schema=/usr/share/nfclone/nfclone.schema.json|' packaging/nfclone.example.yaml \
	>"$root/usr/share/doc/nfclone/examples/nfclone.yaml"
install -m 0644 packaging/debian/copyright "$root/usr/share/doc/nfclone/copyright"
mkdir -p "$root/usr/share/lintian/overrides"
install -m 0644 packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/nfclone"
"$bin" man "$work/man"
for page in "$work"/man/*.8; do
	gz="$root/usr/share/man/man8/${page##*/}.gz"
	gzip -9n -c "$page" >"$gz"
done
"$bin" completion bash >"$root/usr/share/bash-completion/completions/nfclone"
"$bin" completion zsh >"$root/usr/share/zsh/vendor-completions/_nfclone"
"$bin" completion fish >"$root/usr/share/fish/vendor_completions.d/nfclone.fish"
{
	echo "nfclone ($DEB_VERSION) unstable; urgency=medium"
	echo
	echo "  * Built from $describe."
	echo
	echo " -- nfclone maintainers <nfclone@users.noreply.github.com>  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$root/usr/share/doc/nfclone/changelog.gz"

for s in postinst prerm postrm; do
	install -m 0755 "packaging/debian/$s" "$root/DEBIAN/$s"
done
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat >"$root/DEBIAN/control" <<CONTROL
Package: nfclone
Version: $DEB_VERSION
Architecture: $ARCH
Maintainer: nfclone maintainers <nfclone@users.noreply.github.com>
Installed-Size: $size
Depends: passwd
Recommends: systemd
Section: net
Priority: optional
Homepage: https://github.com/nfclone/nfclone
Description: packet mirroring engine for Linux (nftables dup, NFQUEUE, NFLOG)
 nfclone copies the packets that matter to a host to an IDS, a capture
 interface, a VXLAN/GENEVE collector or a pcap file: kernel fast path
 (nftables dup) or userspace (NFQUEUE/NFLOG), originals never delayed.
 .
 The service runs as the unprivileged user nfclone with CAP_NET_ADMIN and
 CAP_NET_RAW only. Installing the package starts nothing: write
 /etc/nfclone/nfclone.yaml (example in /usr/share/doc/nfclone/examples),
 check it with nfclone check, then systemctl enable --now nfclone.
CONTROL
find "$root" -type d -exec chmod 0755 {} +
find "$root/usr/share" "$root/lib" "$root/usr/lib" -type f -exec chmod 0644 {} +
chmod 0755 "$bin"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$OUT"
deb="$OUT/nfclone_${DEB_VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
