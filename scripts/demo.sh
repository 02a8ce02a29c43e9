#!/usr/bin/env bash
# demo.sh — nfclone on live traffic in a throw-away lab (called by `make demo`).
#
# Builds the lab of DESIGN §8, runs `nfclone run` in the engine namespace with a
# config that aggregates two sources (src behind eng:e0, src2 behind eng:e2)
# into one collector (col, behind eng:e1), pings from both sources, and shows
# what the collector captured and the interface counters. Everything is
# removed at the end, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "demo.sh: needs root (network namespaces, nftables)" >&2; exit 2; }
BIN=${BIN:-bin/nfclone}
[ -x "$BIN" ] || go build -o "$BIN" ./cmd/nfclone

work=$(mktemp -d /tmp/nfclone-demo.XXXXXX)
eval "$(bash scripts/lab.sh up)"
nfpid=""
tdpid=""
cleanup() {
	if [ -n "$tdpid" ]; then kill "$tdpid" 2>/dev/null || true; fi
	if [ -n "$nfpid" ]; then
		kill -TERM "$nfpid" 2>/dev/null || true
		wait "$nfpid" 2>/dev/null || true
	fi
	bash scripts/lab.sh down "$LAB_SUFFIX" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cat >"$work/nfclone.yaml" <<EOF
state_dir: $work/state
sessions:
  - name: aggregate
    method: dup                       # kernel fast path: whole L2 frames
    sources:
      - {interface: e0, direction: ingress}   # traffic from src
      - {interface: e2, direction: ingress}   # traffic from src2
    rules:
      - {number: 10, action: accept, protocol: icmp}
      - {number: 20, action: accept, protocol: icmpv6}
    targets:
      - {kind: device, device: e1}    # the collector sits behind e1
  - name: tee
    method: dup                       # xt_TEE-style IP-layer copy to a gateway
    sources:
      - {interface: e0, direction: ingress}
    rules:
      - {number: 10, action: accept, protocol: icmp}
    targets:
      - {kind: gateway, gateway: 10.77.4.2, device: e3}
EOF

step "config ($work/nfclone.yaml)"
sed -n '/^sessions/,$p' "$work/nfclone.yaml"

step "nfclone check (in the engine namespace $ENG)"
ip netns exec "$ENG" "$BIN" check -c "$work/nfclone.yaml"

step "nfclone render"
ip netns exec "$ENG" "$BIN" render -c "$work/nfclone.yaml"

step "nfclone run"
ip netns exec "$ENG" "$BIN" run -c "$work/nfclone.yaml" 2>"$work/nfclone.log" &
nfpid=$!
for _ in $(seq 100); do
	ip netns exec "$ENG" nft list table netdev nfclone >/dev/null 2>&1 && break
	kill -0 "$nfpid" 2>/dev/null || { cat "$work/nfclone.log"; exit 1; }
	sleep 0.1
done
cat "$work/nfclone.log"

step "capturing on the collectors while src and src2 ping the engine"
ip netns exec "$COL" tcpdump -i e0 -n -U --immediate-mode -w "$work/col.pcap" 'icmp or icmp6' 2>"$work/tcpdump.log" &
tdpid=$!
ip netns exec "$COL2" tcpdump -i e0 -n -U --immediate-mode -w "$work/col2.pcap" icmp 2>"$work/tcpdump2.log" &
td2pid=$!
for _ in $(seq 100); do grep -q listening "$work/tcpdump.log" "$work/tcpdump2.log" 2>/dev/null && [ "$(grep -l listening "$work"/tcpdump*.log | wc -l)" = 2 ] && break; sleep 0.1; done
ip netns exec "$SRC" ping -c 5 -i 0.2 -q 10.77.1.1 | tail -2
ip netns exec "$SRC2" ping -c 5 -i 0.2 -q 10.77.3.1 | tail -2
ip netns exec "$SRC" ping -6 -c 3 -i 0.2 -q fd77:1::1 | tail -2
sleep 0.5
kill -INT "$tdpid" "$td2pid"; wait "$tdpid" "$td2pid" 2>/dev/null || true
tdpid=""

step "what the collector col saw (device copies of e0 + e2, whole frames)"
tcpdump -n -r "$work/col.pcap" 2>/dev/null | grep -E 'echo (request|reply)' | sed -E 's/^[0-9:.]+ (IP6?) /\1 /; s/, id .*//' | sort | uniq -c
step "what the collector col2 saw (IP-layer copies of e0 through gateway 10.77.4.2)"
tcpdump -n -r "$work/col2.pcap" 2>/dev/null | grep -E 'echo (request|reply)' | sed -E 's/^[0-9:.]+ (IP6?) /\1 /; s/, id .*//' | sort | uniq -c

step "nfclone status (the daemon's own counters: kernel rule counters for dup sessions)"
ip netns exec "$ENG" "$BIN" status -c "$work/nfclone.yaml"

step "interface counters"
printf '%-28s %s\n' "col  received (packets):" "$(tcpdump -n -r "$work/col.pcap" 2>/dev/null | wc -l)"
printf '%-28s %s\n' "col2 received (packets):" "$(tcpdump -n -r "$work/col2.pcap" 2>/dev/null | wc -l)"
for dev in e0 e1 e2 e3; do
	printf '%-28s %s\n' "eng $dev rx/tx packets:" "$(ip netns exec "$ENG" cat /sys/class/net/$dev/statistics/rx_packets)/$(ip netns exec "$ENG" cat /sys/class/net/$dev/statistics/tx_packets)"
done

step "stopping nfclone (SIGTERM): everything it installed is removed"
kill -TERM "$nfpid"; wait "$nfpid"; nfpid=""
tail -3 "$work/nfclone.log"
left=$(ip netns exec "$ENG" nft list ruleset)
if [ -z "$left" ]; then echo "nft ruleset in $ENG: empty"; else echo "left behind:"; echo "$left"; exit 1; fi
step "done; the lab is removed"
