#!/usr/bin/env bash
# demo.sh — nfclone on live traffic in a throw-away lab (called by `make demo`).
#
# Builds the lab (scripts/lab.sh), runs `nfclone run` in the engine namespace with a
# config that aggregates two sources (src behind eng:e0, src2 behind eng:e2)
# into one collector (col, behind eng:e1), tees src's ICMP to a gateway (col2,
# behind eng:e3), and clones a TCP file transfer from src to src2 with the
# userspace `queue` engine to the same gateway. It pings from both sources,
# sends an 8 MiB random file with socat, and shows what the collectors
# captured, the SHA-256 of the stream col2 reassembled (tcpflow) next to the
# original's, nfclone's counters and the interface counters. A hash mismatch
# is reported, not fatal. Everything is removed at the end, also on failure or
# Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "demo.sh: needs root (network namespaces, nftables)" >&2; exit 2; }
BIN=${BIN:-bin/nfclone}
[ -x "$BIN" ] || go build -o "$BIN" ./cmd/nfclone

work=$(mktemp -d /tmp/nfclone-demo.XXXXXX)
eval "$(bash scripts/lab.sh up)"
nfpid=""
tdpid=""
td2pid=""
td3pid=""
rxpid=""
cleanup() {
	for p in $tdpid $td2pid $td3pid $rxpid; do kill "$p" 2>/dev/null || true; done
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
  - name: clone
    method: queue                     # the clone engine: the kernel's clone goes through NFQUEUE; to one gateway the kernel sends it (queue.kernel_route)
    sources:
      - {interface: e0, direction: ingress}
    rules:
      - {number: 10, action: accept, protocol: tcp, destination_ports: "5001"}   # src -> src2 file transfer
    targets:
      - {kind: gateway, gateway: 10.77.4.2, device: e3}   # IP-layer copies, policy-routed to col2
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
td2pid=""

step "cloning a TCP file transfer (queue session): 8 MiB from src to src2 port 5001, copies to col2"
# The collector-facing link carries wire packets: no segmentation, GRO or
# checksum offload between eng:e3 and col2:e0.
no_offload() {
	ip netns exec "$1" ethtool -K "$2" tso off gso off gro off tx off >/dev/null 2>&1 ||
		echo "ethtool: could not turn off every offload on $1:$2"
}
no_offload "$ENG" e3
no_offload "$COL2" e0
echo "offloads on eng:e3: $(ip netns exec "$ENG" ethtool -k e3 | grep -E '^(tcp-segmentation-offload|generic-segmentation-offload|generic-receive-offload|tx-checksumming):' | tr -s ' \n' ' ')"
head -c 8M /dev/urandom >"$work/original.bin"
ip netns exec "$COL2" tcpdump -i e0 -n -s 0 -B 32768 -U --immediate-mode -w "$work/col2-tcp.pcap" 'tcp port 5001' 2>"$work/tcpdump3.log" &
td3pid=$!
ip netns exec "$SRC2" socat -u TCP-LISTEN:5001,bind=10.77.3.2,reuseaddr OPEN:"$work/received.bin",creat,trunc &
rxpid=$!
for _ in $(seq 100); do
	grep -q listening "$work/tcpdump3.log" 2>/dev/null && [ -n "$(ip netns exec "$SRC2" ss -Hltn 'sport = :5001')" ] && break
	sleep 0.1
done
t0=$(date +%s%N)
ip netns exec "$SRC" socat -u OPEN:"$work/original.bin" TCP:10.77.3.2:5001,connect-timeout=5
wait "$rxpid"; rxpid=""
t1=$(date +%s%N)
# Copies trail the originals (nfclone yields the CPU: queue.nice): wait until
# eng:e3 has sent nothing new and col2's tcpdump has written nothing new for
# 0.6 s (at most 15 s) before stopping its capture. --immediate-mode: without
# it the last packets wait in a ring block for tcpdump's 1 s timeout, and a
# tcpdump stopped before that counts them "received by filter", never
# written (97 packets short in 1 run of 3).
e3tx() { echo "$(ip netns exec "$ENG" cat /sys/class/net/e3/statistics/tx_packets) $(stat -c %s "$work/col2-tcp.pcap" 2>/dev/null)"; }
last=$(e3tx); still=0
for _ in $(seq 75); do
	sleep 0.2
	now=$(e3tx)
	if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; last=$now; fi
	[ "$still" -ge 3 ] && break
done
kill -INT "$td3pid"; wait "$td3pid" 2>/dev/null || true
td3pid=""
printf 'sent %s bytes in %.2f s; col2 captured %s packets of the transfer\n' "$(stat -c %s "$work/original.bin")" \
	"$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1e9 }')" "$(tcpdump -n -r "$work/col2-tcp.pcap" 2>/dev/null | wc -l)"
echo "col2's tcpdump: $(grep -E 'packets (captured|dropped by kernel)' "$work/tcpdump3.log" | paste -sd, - | sed 's/,/, /')"
echo "col2:e0 rx_dropped (the collector could not keep up): $(ip netns exec "$COL2" cat /sys/class/net/e0/statistics/rx_dropped)"

step "what the collector col saw (device copies of e0 + e2, whole frames)"
tcpdump -n -r "$work/col.pcap" 2>/dev/null | grep -E 'echo (request|reply)' | sed -E 's/^[0-9:.]+ (IP6?) /\1 /; s/, id .*//' | sort | uniq -c
step "what the collector col2 saw (IP-layer copies of e0 through gateway 10.77.4.2)"
tcpdump -n -r "$work/col2.pcap" 2>/dev/null | grep -E 'echo (request|reply)' | sed -E 's/^[0-9:.]+ (IP6?) /\1 /; s/, id .*//' | sort | uniq -c

step "SHA-256: the original file, what src2 received, the stream col2 reassembled (tcpflow)"
mkdir -p "$work/flows"
tcpflow -r "$work/col2-tcp.pcap" -o "$work/flows" >/dev/null 2>&1 || true
# tcpflow names a flow SRCADDR.SPORT-DSTADDR.DPORT; the data direction ends in src2:5001.
collected=/dev/null
for f in "$work"/flows/*-010.077.003.002.05001; do # the largest, if tcpflow split it
	[ -f "$f" ] || continue
	if [ "$collected" = /dev/null ] || [ "$(stat -c %s "$f")" -gt "$(stat -c %s "$collected")" ]; then collected=$f; fi
done
sha() { sha256sum "$1" | cut -d' ' -f1; }
orig=$(sha "$work/original.bin")
printf '%-37s %s  %9s bytes\n' "original (src)" "$orig" "$(stat -c %s "$work/original.bin")"
printf '%-37s %s  %9s bytes\n' "received by src2 (the original path)" "$(sha "$work/received.bin")" "$(stat -c %s "$work/received.bin")"
printf '%-37s %s  %9s bytes\n' "reassembled at col2 (queue copies)" "$(sha "$collected")" "$(stat -c %s "$collected")"
if [ "$(sha "$collected")" = "$orig" ]; then
	echo "collector's stream vs original: match"
else
	echo "collector's stream vs original: MISMATCH (the copies did not carry the whole stream; see the clone session's ledger below)"
fi

step "nfclone status (the daemon's own counters: kernel rule counters for dup sessions, the ledger for queue)"
ip netns exec "$ENG" "$BIN" status -c "$work/nfclone.yaml"

step "interface counters"
printf '%-28s %s\n' "col  received (packets):" "$(tcpdump -n -r "$work/col.pcap" 2>/dev/null | wc -l)"
printf '%-28s %s\n' "col2 received (packets):" "$(( $(tcpdump -n -r "$work/col2.pcap" 2>/dev/null | wc -l) + $(tcpdump -n -r "$work/col2-tcp.pcap" 2>/dev/null | wc -l) ))"
for dev in e0 e1 e2 e3; do
	printf '%-28s %s\n' "eng $dev rx/tx packets:" "$(ip netns exec "$ENG" cat /sys/class/net/$dev/statistics/rx_packets)/$(ip netns exec "$ENG" cat /sys/class/net/$dev/statistics/tx_packets)"
done

step "stopping nfclone (SIGTERM): everything it installed is removed"
kill -TERM "$nfpid"; wait "$nfpid"; nfpid=""
grep -E 'session ledger|clean exit' "$work/nfclone.log" || tail -3 "$work/nfclone.log"
left=$(ip netns exec "$ENG" nft list ruleset)
if [ -z "$left" ]; then echo "nft ruleset in $ENG: empty"; else echo "left behind:"; echo "$left"; exit 1; fi
step "done; the lab is removed"
