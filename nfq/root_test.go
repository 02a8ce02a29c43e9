package nfq

import (
	"context"
	"encoding/binary"
	"fmt"
	"github.com/nfclone/nfclone/internal/leaktest"
	"github.com/nfclone/nfclone/internal/netnstest"
	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pipeline"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) { netnstest.RequireRoot(t, "network namespaces, NFQUEUE, NFLOG") }

type testNS = netnstest.NS

func newTestNS(t *testing.T, prefix string) *testNS { return netnstest.New(t, prefix) }

// Test marks: the marker byte of clones, and the marker of this test's one
// session (nfclone's layout is config.MarkLayout; any will do here).
const (
	testMarkMask   = 0xff000000
	testMarkTTLDec = 0x01000000
	testMarker     = 0x02000000
)

// addCloneRules installs what nfclone's rules do for a queue session, for
// every IPv4 packet sent in ns: `meta mark set meta mark | M dup to
// 127.0.0.1 device "lo"` (the mark restored after), and the clones caught in
// output by `queue num N` without bypass, through the xt NFQUEUE compat
// target (this kernel has no native nft queue).
func addCloneRules(t *testing.T, ns *testNS, num uint16) {
	t.Helper()
	script := "add table ip nfqt\n" +
		"add chain ip nfqt copy { type filter hook output priority 0; }\n" +
		fmt.Sprintf("add rule ip nfqt copy meta mark and 0x%08x == 0 meta mark set meta mark or 0x%08x dup to 127.0.0.1 device \"lo\" meta mark set meta mark and 0x%08x\n",
			testMarkMask, testMarker, ^uint32(testMarkMask))
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	c, err := nftables.New(nftables.WithNetNSFd(ns.FD))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: "nfqt"}
	ch := c.AddChain(&nftables.Chain{Name: "clones", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRef(-300)})
	info := make([]byte, 8) // struct xt_NFQ_info_v3, host byte order, padded
	binary.NativeEndian.PutUint16(info[0:2], num)
	binary.NativeEndian.PutUint16(info[2:4], 1) // queues_total; flags 0: no bypass
	u := xt.Unknown(info)
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, testMarkMask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, testMarker)},
		&expr.Target{Name: "NFQUEUE", Rev: 3, Info: &u},
	}})
	if err := c.Flush(); err != nil {
		t.Fatalf("install NFQUEUE rule: %v", err)
	}
}

type countSink struct {
	n, bytes atomic.Uint64
	led      *pipeline.Ledger
}

func (c *countSink) send(b []*packet.Packet) {
	var by uint64
	for _, p := range b {
		by += uint64(len(p.Data))
	}
	c.n.Add(uint64(len(b)))
	c.bytes.Add(by)
	c.led.Account(b)
}

func TestRootQueueReader(t *testing.T) {
	requireRoot(t)
	leaktest.Check(t)
	ns := newTestNS(t, "nfq")
	addCloneRules(t, ns, 0)

	// With no reader bound, the clones are dropped; the originals flow.
	ns.Sh(t, "ping -c 1 -W 2 127.0.0.1")

	var led pipeline.Ledger
	q := pipeline.NewCopyQueue(8192, 0)
	qr, err := NewQueueReader(QueueConfig{
		Num: 0, NetNS: ns.FD, Snaplen: 128,
		Clones:    CloneMarks{Mask: testMarkMask, TTLDecremented: testMarkTTLDec},
		StatsPath: fmt.Sprintf("/proc/%d/net/netfilter/nfnetlink_queue", ns.TID),
	}, q, &led)
	if err != nil {
		t.Fatal(err)
	}
	cs := &countSink{led: &led}
	// The reader stops first (its drain may still push copies), then the
	// workers, as the engine does.
	ctx, cancelReader := context.WithCancel(context.Background())
	wctx, cancelWorkers := context.WithCancel(context.Background())
	var rwg, wwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		if err := qr.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	wwg.Add(1)
	go func() { defer wwg.Done(); pipeline.RunWorkers(wctx, q, 2, cs.send) }()
	stop := func() {
		cancelReader()
		rwg.Wait()
		cancelWorkers()
		wwg.Wait()
	}
	defer func() { stop(); qr.Close() }()

	// Every original is cloned: ping's request and reply (both sent in
	// output on lo) give 6 copies.
	ns.Sh(t, "ping -c 3 -i 0.2 -W 2 127.0.0.1")
	waitFor(t, "6 copies", func() bool { return cs.n.Load() >= 6 })
	b, err := os.ReadFile(qr.cfg.StatsPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseQueueStats(b)
	if err != nil || len(st) != 1 || st[0].CopyRange != 128 || st[0].CopyMode != 2 {
		t.Fatalf("kernel view of the queue: %+v %v", st, err)
	}

	// Throughput: a UDP flood of 64-byte IP packets to a bound (never read)
	// socket on 127.0.0.1 for ~1 s; every datagram is cloned in output.
	var sent int
	var floodTime time.Duration
	copiesBefore := cs.n.Load()
	start := time.Now()
	sent, floodTime = flood(t, ns, time.Second)
	waitFor(t, "flood drained", func() bool {
		s := led.Snapshot()
		return s.InFlight == 0 && s.Offered-6 >= uint64(sent)
	})
	elapsed := time.Since(start)
	copies := cs.n.Load() - copiesBefore
	s := led.Snapshot()
	t.Logf("flood: %d datagrams sent in %v (%.0f pps offered), %d copies in %v (%.0f copies/s, %.1f%%); ledger %+v; reader %+v",
		sent, floodTime.Round(time.Millisecond), float64(sent)/floodTime.Seconds(), copies, elapsed.Round(time.Millisecond),
		float64(copies)/elapsed.Seconds(), 100*float64(copies)/float64(sent), s, qr.Stats())
	stop()
	s = led.Snapshot()
	if !s.Balanced() || s.InFlight != 0 {
		t.Fatalf("ledger does not balance: %+v", s)
	}
	if s.Offered < 6 {
		t.Fatalf("offered %d", s.Offered)
	}
	// Traffic still flows after the reader is gone.
	qr.Close()
	ns.Sh(t, "ping -c 1 -W 2 127.0.0.1")
}

func TestRootLogReader(t *testing.T) {
	requireRoot(t)
	leaktest.Check(t)
	ns := newTestNS(t, "nfl")
	script := "add table ip t\nadd chain ip t c { type filter hook output priority 0; }\n" +
		"add rule ip t c meta l4proto icmp log group 5 snaplen 256 queue-threshold 4\n"
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	var led pipeline.Ledger
	q := pipeline.NewCopyQueue(1024, 0)
	lr, err := NewLogReader(LogConfig{Group: 5, NetNS: ns.FD}, q, &led)
	if err != nil {
		t.Fatal(err)
	}
	cs := &countSink{led: &led}
	var fam4 atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); lr.Run(ctx) }()
	go func() {
		defer wg.Done()
		pipeline.RunWorkers(ctx, q, 1, func(b []*packet.Packet) {
			for _, p := range b {
				if p.Family == 4 && p.Data[9] == 1 {
					fam4.Add(1)
				}
			}
			cs.send(b)
		})
	}()
	ns.Sh(t, "ping -c 4 -i 0.2 -W 2 127.0.0.1")
	// 8 ICMP packets; queue-threshold 4 plus the 10 ms timeout flush them.
	waitFor(t, "8 copies", func() bool { return cs.n.Load() >= 8 })
	cancel()
	wg.Wait()
	lr.Close()
	s := led.Snapshot()
	if fam4.Load() != 8 || s.Offered != 8 || s.Copied != 8 || !s.Balanced() {
		t.Fatalf("icmp copies %d, ledger %+v", fam4.Load(), s)
	}
}

// flood sends 64-byte UDP datagrams to a bound, never-read socket on
// 127.0.0.1:9 inside ns for about d, and returns how many were sent.
func flood(t *testing.T, ns *testNS, d time.Duration) (sent int, took time.Duration) {
	t.Helper()
	ns.Run(func() {
		rfd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(rfd)
		if err := unix.Bind(rfd, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Error(err)
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrInet4{Port: 9, Addr: [4]byte{127, 0, 0, 1}}
		payload := make([]byte, 36)
		start := time.Now()
		for time.Since(start) < d {
			for i := 0; i < 256; i++ {
				if unix.Sendto(fd, payload, 0, sa) == nil {
					sent++
				}
			}
		}
		took = time.Since(start)
	})
	return sent, took
}
