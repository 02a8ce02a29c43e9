#!/usr/bin/env bash
# deps.sh — install what nfclone's build, lint and lab tests need. Idempotent.
#
# - Debian packages (apt-get update only when something is missing; tshark's
#   "non-root capture" debconf question is preseeded so it never prompts).
# - staticcheck, pinned, only when missing.
# - kernel modules the engine and the lab may use (built-in or absent ones are
#   tolerated).
# Prints one summary line.
set -euo pipefail

STATICCHECK_VERSION="${STATICCHECK_VERSION:-v0.8.2}"

# command -> Debian package
declare -A PKG_FOR=(
	[nft]=nftables
	[ip]=iproute2
	[tcpdump]=tcpdump
	[tshark]=tshark
	[iperf3]=iperf3
	[ethtool]=ethtool
	[trafgen]=netsniff-ng
	[sysctl]=procps
	[modprobe]=kmod
	[ping]=iputils-ping
	[shellcheck]=shellcheck
	[iptables]=iptables
	[promtool]=prometheus
	[curl]=curl
	[python3]=python3
	[setpriv]=util-linux
	[unshare]=util-linux
	[nsenter]=util-linux
	[socat]=socat
	[nc]=netcat-openbsd
	[tcpflow]=tcpflow
	[sha256sum]=coreutils
	[ss]=iproute2
	[man]=man-db
	[skopeo]=skopeo
	[tmux]=tmux
	[softflowd]=softflowd
	[nfdump]=nfdump
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi

missing=()
for cmd in "${!PKG_FOR[@]}"; do
	if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/sbin/$cmd" ]; then
		missing+=("${PKG_FOR[$cmd]}")
	fi
done

# scapy for Debian's python3 (the e2e tests craft packets with it).
if ! /usr/bin/python3 -c 'import scapy' >/dev/null 2>&1; then
	missing+=(python3-scapy)
fi

pkgs_msg="packages: all present"
if [ "${#missing[@]}" -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections 2>/dev/null || true
	$SUDO apt-get update -qq >/dev/null
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"${missing[@]}" >/dev/null
	pkgs_msg="packages: installed ${missing[*]}"
	# The prometheus package is only here for promtool; never leave its
	# server running on a real host.
	if printf '%s\n' "${missing[@]}" | grep -qx prometheus; then
		$SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
	fi
	# softflowd and nfdump are there for one e2e test (they run in the
	# lab); their packages enable a probe and a collector on the host.
	for svc in softflowd nfdump; do
		if printf '%s\n' "${missing[@]}" | grep -qx "$svc"; then
			$SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
		fi
	done
fi

gobin="$(go env GOBIN 2>/dev/null || true)"
if [ -z "$gobin" ]; then
	gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
fi
sc_msg="staticcheck: present"
if ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$gobin/staticcheck" ]; then
	go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
	sc_msg="staticcheck: installed ${STATICCHECK_VERSION} in $gobin"
fi

loaded=()
if [ "$($SUDO id -u 2>/dev/null || id -u)" -eq 0 ]; then
	for m in nfnetlink_queue nfnetlink_log nft_dup_netdev nft_dup_ipv4 nft_dup_ipv6 \
		nft_fib_inet nft_fib_netdev nft_numgen nft_limit nft_compat xt_NFQUEUE vxlan veth; do
		if $SUDO modprobe -q "$m" 2>/dev/null; then
			loaded+=("$m")
		fi
	done
fi

echo "deps.sh: ${pkgs_msg}; ${sc_msg}; kernel modules: ${#loaded[@]} of 13 loadable (${loaded[*]:-none}), the rest built in or absent"
