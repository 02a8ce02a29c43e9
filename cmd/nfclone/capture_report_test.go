package main

import (
	"bytes"
	"testing"

	"github.com/nfclone/nfclone/pipeline"
)

func TestCaptureReport(t *testing.T) {
	for _, tc := range []struct {
		name string
		snap pipeline.Snapshot
		// written: packets in the file (0: as many as copied)
		written uint64
		cut     uint64
		want    string
	}{
		{
			name: "nothing lost",
			snap: pipeline.Snapshot{Offered: 20, Received: 20, Copied: 20},
			want: "20 packets captured\n" +
				"20 packets received by filter\n" +
				"0 packets dropped by kernel\n" +
				"0 packets dropped by nfclone\n",
		},
		{
			// The run of issue 10: the file held 26 packets and the command
			// said nothing else.
			name: "heavy loss on both sides",
			snap: pipeline.Snapshot{Offered: 124613, Received: 60026, Copied: 26, Drops: pipeline.Drops{
				SocketOverrun: 64000, KernelQueue: 587, SendError: 59990, QueueOverflow: 10}},
			want: "26 packets captured\n" +
				"124613 packets received by filter\n" +
				"64587 packets dropped by kernel (socket_overrun 64000, kernel_queue 587)\n" +
				"60000 packets dropped by nfclone (queue_overflow 10, send_error 59990)\n" +
				"nfclone: warning: 124587 of 124613 packets received by filter (99.98 %) are not in the capture\n",
		},
		{
			name: "kernel_lost, rate and copies left at exit",
			snap: pipeline.Snapshot{Offered: 1000, Received: 900, Copied: 890, InFlight: 5, Drops: pipeline.Drops{
				KernelLost: 40, RateLimit: 60, Malformed: 5}},
			want: "890 packets captured\n" +
				"1000 packets received by filter\n" +
				"100 packets dropped by kernel (kernel_lost 40, rate_limit 60)\n" +
				"10 packets dropped by nfclone (malformed 5, unsent_at_exit 5)\n" +
				"nfclone: warning: 110 of 1000 packets received by filter (11.00 %) are not in the capture\n",
		},
		{
			// -c 20: what matched after the count is not a loss (tcpdump does
			// not count it either), but it is said.
			name: "count reached",
			snap: pipeline.Snapshot{Offered: 24, Received: 24, Copied: 20, Drops: pipeline.Drops{SendError: 4}},
			cut:  4,
			want: "20 packets captured\n" +
				"24 packets received by filter\n" +
				"0 packets dropped by kernel\n" +
				"0 packets dropped by nfclone\n" +
				"4 packets received after the -c count (not written)\n",
		},
		{
			name: "count reached and a real send error",
			snap: pipeline.Snapshot{Offered: 25, Received: 25, Copied: 20, Drops: pipeline.Drops{SendError: 5}},
			cut:  4,
			want: "20 packets captured\n" +
				"25 packets received by filter\n" +
				"0 packets dropped by kernel\n" +
				"1 packets dropped by nfclone (send_error 1)\n" +
				"4 packets received after the -c count (not written)\n" +
				"nfclone: warning: 1 of 25 packets received by filter (4.00 %) are not in the capture\n",
		},
		{
			name: "one in a million is not 0 %",
			snap: pipeline.Snapshot{Offered: 1000000, Received: 1000000, Copied: 999999, Drops: pipeline.Drops{SendError: 1}},
			want: "999999 packets captured\n" +
				"1000000 packets received by filter\n" +
				"0 packets dropped by kernel\n" +
				"1 packets dropped by nfclone (send_error 1)\n" +
				"nfclone: warning: 1 of 1000000 packets received by filter (<0.01 %) are not in the capture\n",
		},
		{
			name: "all but one is not 100 %",
			snap: pipeline.Snapshot{Offered: 1000000, Received: 1, Copied: 1, Drops: pipeline.Drops{SocketOverrun: 999999}},
			want: "1 packets captured\n" +
				"1000000 packets received by filter\n" +
				"999999 packets dropped by kernel (socket_overrun 999999)\n" +
				"0 packets dropped by nfclone\n" +
				"nfclone: warning: 999999 of 1000000 packets received by filter (>99.99 %) are not in the capture\n",
		},
		{
			name: "a ledger that does not balance is said",
			snap: pipeline.Snapshot{Offered: 10, Received: 8, Copied: 8},
			want: "8 packets captured\n" +
				"10 packets received by filter\n" +
				"0 packets dropped by kernel\n" +
				"0 packets dropped by nfclone\n" +
				"nfclone: warning: the ledger does not balance: 10 received by filter, 8 accounted for\n",
		},
		{
			name:    "super-packets cut into wire packets",
			snap:    pipeline.Snapshot{Offered: 3, Received: 3, Copied: 3},
			written: 130,
			want: "130 packets captured\n" +
				"(3 packets as the kernel handed them over: super-packets were cut into wire packets; the counts below are in those)\n" +
				"3 packets received by filter\n" +
				"0 packets dropped by kernel\n" +
				"0 packets dropped by nfclone\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			written := tc.written
			if written == 0 {
				written = tc.snap.Copied
			}
			writeCaptureReport(&b, tc.snap, tc.cut, written)
			if b.String() != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", b.String(), tc.want)
			}
		})
	}
}
