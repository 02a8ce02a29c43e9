#!/usr/bin/env bash
# lab.sh — nfclone's network-namespace test lab.
#
#   scripts/lab.sh up [SUFFIX]   build the lab (random 6-hex suffix if omitted) and print
#                                shell assignments: export LAB_SUFFIX=... SRC=... ENG=...
#   scripts/lab.sh down SUFFIX   remove that lab (idempotent)
#   scripts/lab.sh down-all      remove every lab namespace (src|src2|eng|col|col2)-<suffix>,
#                                including labs of tests running in parallel right now
#
# Topology (all links veth, every interface up, lo up everywhere):
#   src  e0 10.77.1.2/24 fd77:1::2/64 ── eng e0 10.77.1.1/24 fd77:1::1/64
#   col  e0 10.77.2.2/24 fd77:2::2/64 ── eng e1 10.77.2.1/24 fd77:2::1/64   (col promiscuous)
#   src2 e0 10.77.3.2/24 fd77:3::2/64 ── eng e2 10.77.3.1/24 fd77:3::1/64
#   col2 e0 10.77.4.2/24 fd77:4::2/64 ── eng e3 10.77.4.1/24 fd77:4::1/64   (col2 promiscuous)
# src/src2/col/col2 have default routes (v4 and v6) via their eng address.
#
# Sysctls (inside the lab namespaces only; the host namespace is never touched):
#   everywhere: ipv6 accept_dad=0 (and addresses are "nodad"), router_solicitations=0,
#               ipv4 rp_filter=0, arp_ignore=1, arp_announce=2 (answer ARP only for the
#               address of the interface asked on; no ARP flux between eng's interfaces)
#   eng:        ip_forward=1, ipv6 forwarding=1
#   col/col2:   forwarding off: copies addressed elsewhere are captured, then dropped
#               silently (no ICMP errors are sent for them when forwarding is off).
# Veth pairs are created directly inside their namespaces ("ip link add e0 netns A type
# veth peer name e0 netns B"); if that fails, they are created under temporary names
# nl<suffix><n>{a,b} in the host namespace, moved at once and renamed there
# (LAB_VETH_FALLBACK=1 forces that path).
set -euo pipefail

LAB_ROLES=(src src2 eng col col2)

die() { echo "lab.sh: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root"; }

ns_name() { echo "$1-$2"; }

# ns_exists NAME
ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$1"; }

# kill_ns_pids NS: end the processes still running inside a lab namespace.
kill_ns_pids() {
	local pids
	pids="$(ip netns pids "$1" 2>/dev/null || true)"
	if [ -n "$pids" ]; then
		# shellcheck disable=SC2086
		kill -9 $pids 2>/dev/null || true
	fi
}

lab_down() {
	local suffix="$1" role ns n
	for role in "${LAB_ROLES[@]}"; do
		ns="$(ns_name "$role" "$suffix")"
		if ns_exists "$ns"; then
			kill_ns_pids "$ns"
			ip netns del "$ns" 2>/dev/null || true
		fi
	done
	# temporaries of the fallback veth path, if any were left in the host namespace
	for n in 0 1 2 3; do
		ip link del "nl${suffix}${n}a" 2>/dev/null || true
	done
}

# sysctl_ns NS key=value...
sysctl_ns() {
	local ns="$1"
	shift
	ip netns exec "$ns" sysctl -q -w "$@" >/dev/null
}

# veth NSA IFA NSB IFB N: a veth pair with one end in each namespace.
veth() {
	local nsa="$1" ifa="$2" nsb="$3" ifb="$4" n="$5"
	if [ "${LAB_VETH_FALLBACK:-0}" != 1 ] &&
		ip link add "$ifa" netns "$nsa" type veth peer name "$ifb" netns "$nsb" 2>/dev/null; then
		return 0
	fi
	local ta="nl${SUFFIX}${n}a" tb="nl${SUFFIX}${n}b"
	ip link add "$ta" type veth peer name "$tb"
	ip link set "$ta" netns "$nsa"
	ip link set "$tb" netns "$nsb"
	ip -n "$nsa" link set "$ta" name "$ifa"
	ip -n "$nsb" link set "$tb" name "$ifb"
}

# addr NS IF V4/len V6/len
addr() {
	ip -n "$1" addr add "$3" dev "$2"
	ip -n "$1" -6 addr add "$4" dev "$2" nodad
	ip -n "$1" link set "$2" up
}

rollback() {
	trap - ERR INT TERM
	echo "lab.sh: up failed (rc=$1), rolling back lab $SUFFIX" >&2
	lab_down "$SUFFIX"
	exit "$1"
}

lab_up() {
	SUFFIX="${1:-}"
	if [ -z "$SUFFIX" ]; then
		SUFFIX="$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
	fi
	[[ "$SUFFIX" =~ ^[A-Za-z0-9]{1,8}$ ]] || die "bad suffix '$SUFFIX' (1-8 alphanumerics)"
	local SRC="src-$SUFFIX" SRC2="src2-$SUFFIX" ENG="eng-$SUFFIX" COL="col-$SUFFIX" COL2="col2-$SUFFIX"
	local role ns
	for role in "${LAB_ROLES[@]}"; do
		ns_exists "$(ns_name "$role" "$SUFFIX")" && die "namespace $(ns_name "$role" "$SUFFIX") already exists"
	done

	trap 'rollback $?' ERR
	trap 'rollback 130' INT TERM

	for ns in "$SRC" "$SRC2" "$ENG" "$COL" "$COL2"; do
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		sysctl_ns "$ns" \
			net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
			net.ipv6.conf.all.router_solicitations=0 net.ipv6.conf.default.router_solicitations=0 \
			net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
			net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.default.arp_ignore=1 \
			net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.default.arp_announce=2
	done
	sysctl_ns "$ENG" net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 net.ipv6.conf.default.forwarding=1
	for ns in "$SRC" "$SRC2" "$COL" "$COL2"; do
		sysctl_ns "$ns" net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
	done

	veth "$SRC" e0 "$ENG" e0 0
	veth "$COL" e0 "$ENG" e1 1
	veth "$SRC2" e0 "$ENG" e2 2
	veth "$COL2" e0 "$ENG" e3 3
	# test hook: LAB_INJECT_FAILURE=1 makes "up" fail here to exercise the rollback
	[ "${LAB_INJECT_FAILURE:-0}" != 1 ] || false

	addr "$ENG" e0 10.77.1.1/24 fd77:1::1/64
	addr "$ENG" e1 10.77.2.1/24 fd77:2::1/64
	addr "$ENG" e2 10.77.3.1/24 fd77:3::1/64
	addr "$ENG" e3 10.77.4.1/24 fd77:4::1/64
	addr "$SRC" e0 10.77.1.2/24 fd77:1::2/64
	addr "$COL" e0 10.77.2.2/24 fd77:2::2/64
	addr "$SRC2" e0 10.77.3.2/24 fd77:3::2/64
	addr "$COL2" e0 10.77.4.2/24 fd77:4::2/64

	ip -n "$COL" link set e0 promisc on
	ip -n "$COL2" link set e0 promisc on

	local i
	for i in 1 2 3 4; do
		case $i in
		1) ns="$SRC" ;;
		2) ns="$COL" ;;
		3) ns="$SRC2" ;;
		4) ns="$COL2" ;;
		esac
		ip -n "$ns" route add default via "10.77.$i.1" dev e0
		ip -n "$ns" -6 route add default via "fd77:$i::1" dev e0
	done
	# per-interface rp_filter (the effective value is max(all, iface))
	for ns in "$SRC" "$SRC2" "$ENG" "$COL" "$COL2"; do
		for i in $(ip -n "$ns" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
			sysctl_ns "$ns" "net.ipv4.conf.$i.rp_filter=0"
		done
	done

	trap - ERR INT TERM
	echo "export LAB_SUFFIX=$SUFFIX"
	echo "SRC=$SRC SRC2=$SRC2 ENG=$ENG COL=$COL COL2=$COL2"
}

lab_down_all() {
	local ns
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(src|src2|eng|col|col2)-[A-Za-z0-9]{1,8}$' || true); do
		kill_ns_pids "$ns"
		ip netns del "$ns" 2>/dev/null || true
	done
	# fallback-path temporaries in the host namespace
	local l
	for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^nl[0-9a-fA-F]{6}[0-3][ab]$' || true); do
		ip link del "$l" 2>/dev/null || true
	done
}

main() {
	local cmd="${1:-}"
	case "$cmd" in
	up)
		need_root
		lab_up "${2:-}"
		;;
	down)
		need_root
		[ -n "${2:-}" ] || die "usage: lab.sh down SUFFIX"
		lab_down "$2"
		;;
	down-all)
		need_root
		lab_down_all
		;;
	*)
		echo "usage: lab.sh up [SUFFIX] | down SUFFIX | down-all" >&2
		exit 2
		;;
	esac
}

main "$@"
