package nfq

import (
	"fmt"
	"github.com/nfclone/nfclone/internal/testpkt"
	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pipeline"
	"os"
	"path/filepath"
	"testing"
)

func fuzzSeeds() [][]byte {
	v4 := testpkt.IPv4(60, [4]byte{10, 77, 0, 2})
	return [][]byte{
		queuePacketMsg(qpkt{id: 1, data: v4}),
		queuePacketMsg(qpkt{id: 2, data: v4[:28], capLen: 60, inIf: 2, hw: []byte{2, 0, 0, 0, 0, 1}}),
		append(queuePacketMsg(qpkt{id: 3, data: ipv6(48)}), ackMsg(1, 0)...),
		append(append(logPacketMsg(0, v4), logPacketMsg(1, ipv6(40))...), doneMsg()...),
		ackMsg(7, -16),
		{0x10, 0, 0, 0, 0, 3, 0, 0},
	}
}

// FuzzParseMessages feeds arbitrary datagrams to both readers' message
// walkers: malformed input is counted, never a panic, and the ledger stays
// balanced.
func FuzzParseMessages(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, log bool) {
		var led pipeline.Ledger
		q := pipeline.NewCopyQueue(8, 0)
		kind := kindQueue
		if log {
			kind = kindLog
		}
		r := newReader(kind, newFakeSock(), q, &led, 0, 0, 1, 64, 64, nil)
		r.walk(b)
		r.fold()
		s := led.Snapshot()
		if s.Received != uint64(q.Len())+s.Drops.Malformed+s.Drops.QueueOverflow {
			t.Fatalf("unbalanced: %+v, queued %d", s, q.Len())
		}
		dst := make([]*packet.Packet, 8)
		for _, p := range dst[:q.TryPopBatch(dst)] {
			if p.Family != 4 && p.Family != 6 || p.OrigLen < len(p.Data) {
				t.Fatalf("bad packet %+v", p)
			}
			p.Release()
		}
	})
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzParseMessages (run with
// NFQ_WRITE_SEEDS=1).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("NFQ_WRITE_SEEDS") != "1" {
		t.Skip("set NFQ_WRITE_SEEDS=1 to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParseMessages")
	os.MkdirAll(dir, 0o755)
	for i, s := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbool(%v)\n", s, i == 3)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
