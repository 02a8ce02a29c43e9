package engine

import (
	"testing"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pipeline"
	"github.com/nfclone/nfclone/rules"
	"github.com/nfclone/nfclone/sink"
	"github.com/nfclone/nfclone/status"
)

// A log session whose TCP clones the kernel sends keeps two ledgers: what
// its first group's reader misses is lost, what its second group's reader
// misses the kernel sent anyway. Its account tells them apart, and its one
// target counts nfclone's copies and the kernel's.
func TestSplitSessionAccount(t *testing.T) {
	user, routed := &pipeline.Ledger{}, &pipeline.Ledger{}
	// nfclone's part: 10 read, 8 sent, 2 lost to a full socket (gaps).
	user.AddReceived(10)
	user.AddCopied(8, 8*100)
	user.AddOverruns(2)
	// The kernel's part: 5 clones read and counted, 3 gaps.
	routed.AddReceived(5)
	batch := make([]*packet.Packet, 5)
	for i := range batch {
		batch[i] = &packet.Packet{OrigLen: 1000}
	}
	routed.AccountRouted(batch)
	routed.AddOverruns(3)
	s := &session{name: "lg", routed: "lg/0:gateway", ledger: user, routedLedger: routed, log: discard(),
		queue: pipeline.NewCopyQueue(16, 0), targets: []sink.Sink{fakeStatSink{sent: 8, bytes: 800}}, kinds: []config.Kind{config.KindGateway}}
	// The clones chain queued 10 clones (2 the reader was never offered:
	// its group's buffer was full); the copy rules matched 12 + 10.
	m := map[string]rules.CounterValue{
		rules.CounterQueued: {Packets: 10, Bytes: 10 * 1000},
		rules.CounterCopied: {Packets: 22},
	}
	total, r := s.account(m)
	if r == nil || r.Copied != 10 || r.KernelSent != 5 {
		t.Fatalf("the kernel's share %+v: want 10 copied, 5 of them unread (kernel_sent)", r)
	}
	if total.Offered != 22 || total.Copied != 18 || total.KernelSent != 5 || total.Drops.SocketOverrun != 2 || total.Drops.KernelLost != 0 || !total.Balanced() {
		t.Fatalf("the session's ledger %+v: want offered 22, copied 18 (5 sent unread by the kernel), socket_overrun 2, balanced", total)
	}
	st := s.status(m)
	if len(st.Targets) != 1 || st.Targets[0].Stats == nil || st.Targets[0].Stats.Sent != 18 || !st.Targets[0].KernelTCP || st.Targets[0].Kernel {
		t.Fatalf("targets %+v: want one, sent 18 (8 by nfclone, 10 by the kernel), kernel_tcp", st.Targets)
	}
	if st.Copied != (status.Counter{Packets: 18, Bytes: total.Bytes}) || st.Seen.Packets != 22 {
		t.Fatalf("status seen %+v copied %+v", st.Seen, st.Copied)
	}
}

type fakeStatSink struct{ sent, bytes uint64 }

func (f fakeStatSink) Name() string                         { return "lg/0:gateway" }
func (f fakeStatSink) Send(b []*packet.Packet) (int, error) { return len(b), nil }
func (f fakeStatSink) Close() error                         { return nil }
func (f fakeStatSink) Stats() sink.Stats                    { return sink.Stats{Sent: f.sent, Bytes: f.bytes} }
