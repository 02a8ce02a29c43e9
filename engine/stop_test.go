package engine

import (
	"github.com/nfclone/nfclone/packet"
	"sync"
	"testing"
	"time"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/pipeline"
	"github.com/nfclone/nfclone/sink"
)

// blockedSink blocks every Send until released (a full socket buffer, a
// hung file system).
type blockedSink struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newBlockedSink() *blockedSink {
	return &blockedSink{entered: make(chan struct{}), release: make(chan struct{})}
}

func (b *blockedSink) Name() string { return "blocked" }
func (b *blockedSink) Send(batch []*packet.Packet) (int, error) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	return len(batch), nil
}
func (b *blockedSink) Close() error { return nil }

// blockedSession runs a session whose only target blocks: one batch of
// held copies inside the sink, queued more behind it.
func blockedSession(t *testing.T, held, queued int) (*session, *blockedSink) {
	t.Helper()
	b := newBlockedSink()
	s := &session{name: "t", method: config.MethodQueue, queue: pipeline.NewCopyQueue(1024, 0), ledger: &pipeline.Ledger{},
		targets: []sink.Sink{b}, workers: 1, log: discard()}
	s.setFanout(b)
	s.start(nil)
	push := func(n int) {
		for i := 0; i < n; i++ {
			s.ledger.AddReceived(1)
			s.queue.Push(packet.New([]byte{0x45, 0, 0, 20}))
		}
	}
	push(held)
	select {
	case <-b.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the worker never reached the sink")
	}
	push(queued)
	t.Cleanup(func() { close(b.release) })
	return s, b
}

// within runs f and fails if it takes longer than max (without waiting
// for it beyond that: on today's code f never returns).
func within(t *testing.T, max time.Duration, what string, f func()) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(max):
		t.Fatalf("%s: still running after %v", what, max)
	}
	return time.Since(start)
}

// A blocked sink does not block stop: it returns at its deadline, the
// copies still queued are counted as dropped and those inside the sink as
// in flight, so the ledger still adds up.
func TestStopBoundedByBlockedSink(t *testing.T) {
	s, _ := blockedSession(t, 5, 20)
	within(t, 3*time.Second, "stop with a blocked sink and a 300 ms drain", func() { s.stop(300*time.Millisecond, nil) })
	snap := s.ledger.Snapshot()
	if snap.Drops.QueueOverflow < 20 || snap.Copied != 0 || snap.Drops.QueueOverflow+snap.InFlight != 25 || snap.Offered != snap.Copied+snap.Drops.Total()+snap.InFlight {
		t.Fatalf("ledger after a bounded stop: %+v", snap)
	}
}

// Sessions stop in parallel: three blocked sessions take about one
// deadline, not three.
func TestSessionsStopInParallel(t *testing.T) {
	ss := map[string]userSession{}
	for _, n := range []string{"a", "b", "c"} {
		ss[n], _ = blockedSession(t, 1, 3)
	}
	d := within(t, 10*time.Second, "stopping three blocked sessions", func() { stopSessions(ss, time.Second, nil) })
	if d > 2*time.Second {
		t.Fatalf("three blocked sessions with a 1 s drain took %v to stop: one after another", d)
	}
}
