package e2e

import (
	"context"
	"fmt"
	"testing"

	"github.com/nfclone/nfclone/test/lab"
)

// TestBulkTCPIntoCreatedPair: a software TAP port. A session copies the
// data direction of a 32 MiB file sent over TCP from src through eng into a
// veth pair nfclone creates (agg0), the kernel sending the copies into its
// near end (queue, and log's TCP clones). Whatever reads agg0 — here
// tcpdump — must see what a wire carries: the reassembled stream is the
// file (tcpflow, SHA-256), tshark finds every IPv4 and TCP checksum Good,
// no frame over 1514 bytes and no IP fragment. Left to the kernel's
// defaults a veth hands its peer super-packets whole and unfinished
// checksums; nfclone's pair cuts and completes them (gso_max_segs 1,
// tx-checksumming off on the near end).
func TestBulkTCPIntoCreatedPair(t *testing.T) {
	lab.RequireTools(t, "socat", "tcpdump", "tshark", "tcpflow", "ss")
	file, sum := writeRandomFile(t, t.TempDir(), "tap.bin", bulkBytes)
	l := lab.New(t)
	// Paced (the sender's TCP still hands out 64 KiB super-packets, which
	// the token bucket's burst holds several of): tcpdump reading agg0 in
	// eng, on the two cores the forwarding and the sender use, dropped
	// 800–5 700 frames of the line-rate burst from its ring (the capture's
	// loss, which tcpflow then saw as holes, not the copies').
	l.MustExec(t, l.Src, "tc", "qdisc", "replace", "dev", lab.Iface, "root", "tbf", "rate", pacedRate, "burst", "256kb", "latency", "100ms")
	t.Cleanup(func() { _, _ = l.Exec(context.Background(), l.Src, "tc", "qdisc", "del", "dev", lab.Iface, "root") })
	for _, method := range []string{"queue", "log"} {
		t.Run(method, func(t *testing.T) {
			d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: tap
    method: %s
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: tcp, destination_ports: "%d"}]
    targets: [{kind: device, device: agg0, create: true}]
`, method, bulkPort))
			capt := l.StartCapture(t, l.Eng, "agg0", fmt.Sprintf("tcp port %d or (ip[6:2] & 0x3fff != 0)", bulkPort),
				lab.Direction("in"), lab.TcpdumpArgs("-s", "0", "-B", collectorBuf))
			sendFileToCol2(t, l, file, sum, capt.Path)
			d.stop(t)
			if drops := capt.Finish(); drops != 0 {
				t.Errorf("tcpdump on agg0 reports %d packets dropped by kernel", drops)
			}
			j := judgeTCPCopies(t, capt.Path, false)
			t.Logf("at agg0: %d frames, %d data segments, longest %d bytes, %d IP fragments; stream %d bytes", j.frames, j.dataFrames, j.maxFrame, j.fragments, j.streamLen)
			if j.dataFrames == 0 || j.streamSHA != sum {
				t.Errorf("the copies' stream (%s%s) is %d bytes, not the %d-byte file", j.streamTool, j.streamNote, j.streamLen, bulkBytes)
			}
			if n := j.ipSum.bad() + j.tcpSum.bad(); n > 0 || j.tcpSum["1"] == 0 {
				t.Errorf("checksums not Good: IPv4 %v, TCP %v", j.ipSum, j.tcpSum)
			}
			if j.maxFrame > maxWireFrame || j.fragments > 0 {
				t.Errorf("frames up to %d bytes (over %d: %s), %d IP fragments: not what a wire carries", j.maxFrame, maxWireFrame, first(j.oversize, 5), j.fragments)
			}
			ledgerNumbers(t, d.Stderr(), "tap") // fails unless balanced
		})
	}
}
