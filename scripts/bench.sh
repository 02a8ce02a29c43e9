#!/usr/bin/env bash
# bench.sh — nfclone's benchmark in a throw-away lab (called by `make bench`).
#
# Builds nfclone and the harness (test/bench/cmd/nfbench), creates the lab of
# the lab with scripts/lab.sh, and runs, in one go and with the same trafgen
# settings: copies/s of dup, queue, log (and queue with 2 queues), originals'
# throughput with each method and with no rules, added latency (p50/p99) at a
# moderate load, nfclone's peak RSS, the drop ledgers, the highest load dup
# copies without loss and queue/log at that load; then TCP bulk (iperf3
# through the engine, 1 and 4 streams, unlimited and 1 Gbit/s) with dup, queue
# and log to a gateway, device and vxlan target. Prints the tables and writes
# JSON. The lab is removed at the end, also on failure or Ctrl-C.
#
# Environment:
#   BENCH_DURATION=5     measured seconds per phase (default 5 for UDP, 3 for TCP)
#   BENCH_QUICK=1        about 1 s per phase, a TCP subset (CI smoke run)
#   BENCH_PHASES=tcp     only some phases: all (default), udp, tcp, or prefixes
#                        of TCP phase names (tcp/log, tcp/dup/vxlan), comma-separated
#   BENCH_TCP_CC=cubic   the TCP senders' congestion control (iperf3 -C; default cubic,
#                        the kernel's default; bbr keeps less in flight, see docs/methods.md)
#   BENCH_TCP_RATES=2,4,8 extra offered rates (Gbit/s over all streams) for every TCP case:
#                        the table "complete up to" says up to which rate each method copied all
#   BENCH_UNDERLAY_MTU=9000 the collector link's MTU in the TCP phases (vxlan targets: the
#                        kernel sends into nfclone's VXLAN device where the path takes whole copies)
#   BENCH_OUT=FILE       JSON results (default out/bench-results.json; /out/ is git-ignored)
#   BENCH_PROBE_PPS=5000 latency probe rate
#   BENCH_FLOOD=30       add the flood phases (dup, queue, log, queue and log with a session
#                        rate, and queue with hold: true; generator on every CPU, seconds)
#   BENCH_FLOOD_RATE=N   the session rate of the rate-limited flood phases (default 50000/s)
#   NFCLONE_BIN=FILE     use this nfclone binary instead of building one
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "bench.sh: needs root (network namespaces, nftables)" >&2; exit 2; }
for tool in ip trafgen nft iperf3 ethtool go; do
	command -v "$tool" >/dev/null || { echo "bench.sh: $tool not found (run scripts/deps.sh)" >&2; exit 2; }
done

work=$(mktemp -d /tmp/nfclone-bench.XXXXXX)
LAB_SUFFIX=""
benchpid=""
# shellcheck disable=SC2317 # reached through the trap
cleanup() {
	local rc=$?
	# Ignore further INT/TERM while cleaning up (timeout(1) and a terminal
	# may deliver a signal twice: to the script and to its process group).
	trap '' INT TERM
	trap - EXIT
	if [ -n "$benchpid" ]; then
		kill -TERM "$benchpid" 2>/dev/null || true
		wait "$benchpid" 2>/dev/null || true
	fi
	if [ -n "$LAB_SUFFIX" ]; then
		bash scripts/lab.sh down "$LAB_SUFFIX" >/dev/null 2>&1 || true
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BIN=${NFCLONE_BIN:-}
if [ -z "$BIN" ]; then
	BIN="$work/nfclone"
	go build -o "$BIN" ./cmd/nfclone
fi
go build -o "$work/nfbench" ./test/bench/cmd/nfbench

export BENCH_OUT="${BENCH_OUT:-$PWD/out/bench-results.json}"
mkdir -p "$(dirname "$BENCH_OUT")"

# The suffix is chosen here, so the trap knows the lab even if up is interrupted.
LAB_SUFFIX=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
labenv=$(bash scripts/lab.sh up "$LAB_SUFFIX")
eval "$labenv"
# shellcheck disable=SC2154 # SRC, ENG, COL, COL2 come from lab.sh's output
echo "bench.sh: lab $LAB_SUFFIX up ($SRC $ENG $COL $COL2)" >&2

# In the background so that INT/TERM reach the trap at once; nfbench stops its
# own processes on SIGTERM and lab.sh down kills whatever is left in the lab.
"$work/nfbench" -nfclone "$BIN" -workdir "$work/run" \
	-src "$SRC" -eng "$ENG" -col "$COL" -col2 "$COL2" &
benchpid=$!
rc=0
wait "$benchpid" || rc=$?
benchpid=""
exit "$rc"
