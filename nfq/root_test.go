package nfq

import (
	"context"
	"encoding/binary"
	"fmt"
	"github.com/nfclone/nfclone/internal/netnstest"
	"github.com/nfclone/nfclone/packet"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) { netnstest.RequireRoot(t, "network namespaces, NFQUEUE, NFLOG") }

type testNS = netnstest.NS

func newTestNS(t *testing.T, prefix string) *testNS { return netnstest.New(t, prefix) }

// addQueueRule installs "ip nfqt out: queue num N bypass" through the xt
// NFQUEUE compat target (this kernel has no native nft queue).
func addQueueRule(t *testing.T, ns *testNS, num uint16) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(ns.FD))
	if err != nil {
		t.Fatal(err)
	}
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "nfqt"})
	ch := c.AddChain(&nftables.Chain{Name: "out", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	info := make([]byte, 8) // struct xt_NFQ_info_v3, host byte order, padded
	binary.NativeEndian.PutUint16(info[0:2], num)
	binary.NativeEndian.PutUint16(info[2:4], 1)   // queues_total
	binary.NativeEndian.PutUint16(info[4:6], 0x1) // NFQ_FLAG_BYPASS
	u := xt.Unknown(info)
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
		&expr.Target{Name: "NFQUEUE", Rev: 3, Info: &u},
	}})
	if err := c.Flush(); err != nil {
		t.Fatalf("install NFQUEUE rule: %v", err)
	}
}

type countSink struct {
	n, bytes atomic.Uint64
	led      *Ledger
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
	checkNoLeak(t)
	ns := newTestNS(t, "nfq")
	addQueueRule(t, ns, 0)

	// Bypass: with no reader bound, traffic flows.
	ns.Sh(t, "ping -c 1 -W 2 127.0.0.1")

	var led Ledger
	q := NewCopyQueue(8192, 0)
	qr, err := NewQueueReader(QueueConfig{
		Num: 0, NetNS: ns.FD, Snaplen: 128,
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
	go func() { defer wwg.Done(); RunWorkers(wctx, q, 2, cs.send) }()
	stop := func() {
		cancelReader()
		rwg.Wait()
		cancelWorkers()
		wwg.Wait()
	}
	defer func() { stop(); qr.Close() }()

	// Originals are accepted: ping gets its replies (request + reply are
	// both queued in output on lo).
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
	// socket on 127.0.0.1 for ~1 s; every datagram is queued in output.
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
	// Losses must be attributed; what is not, is invisible to nfclone:
	// queue-full with fail-open is not counted by the kernel.
	if s.Offered < 6 {
		t.Fatalf("offered %d", s.Offered)
	}
	// Traffic still flows after the reader is gone (bypass).
	qr.Close()
	ns.Sh(t, "ping -c 1 -W 2 127.0.0.1")
}

func TestRootLogReader(t *testing.T) {
	requireRoot(t)
	checkNoLeak(t)
	ns := newTestNS(t, "nfl")
	script := "add table ip t\nadd chain ip t c { type filter hook output priority 0; }\n" +
		"add rule ip t c meta l4proto icmp log group 5 snaplen 256 queue-threshold 4\n"
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	var led Ledger
	q := NewCopyQueue(1024, 0)
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
		RunWorkers(ctx, q, 1, func(b []*packet.Packet) {
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

// TestRootCompareNaive (NFQ_COMPARE=1) measures, in one run, the same flood
// with: the rule and no reader (bypass), a naive go-nfqueue loop (library
// callback, one verdict per packet, payload copied), and QueueReader.
func TestRootCompareNaive(t *testing.T) {
	if os.Getenv("NFQ_COMPARE") != "1" {
		t.Skip("set NFQ_COMPARE=1 to run the throughput comparison")
	}
	requireRoot(t)
	ns := newTestNS(t, "nfqc")
	addQueueRule(t, ns, 0)
	const d = 2 * time.Second
	for round := 0; round < 2; round++ {
		sent, took := flood(t, ns, d)
		t.Logf("bypass (no reader): %.0f pps", float64(sent)/took.Seconds())

		// naive
		nf, err := nfqueue.Open(&nfqueue.Config{NfQueue: 0, MaxPacketLen: 0xffff, MaxQueueLen: 4096,
			Copymode: nfqueue.NfQnlCopyPacket, Flags: nfqueue.NfQaCfgFlagFailOpen, NetNS: ns.FD})
		if err != nil {
			t.Fatal(err)
		}
		var naive atomic.Uint64
		ctx, cancel := context.WithCancel(context.Background())
		err = nf.RegisterWithErrorFunc(ctx, func(a nfqueue.Attribute) int {
			if a.Payload != nil {
				_ = append([]byte(nil), (*a.Payload)...)
				naive.Add(1)
			}
			nf.SetVerdict(*a.PacketID, nfqueue.NfAccept)
			return 0
		}, func(error) int { return 0 })
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		sent, took = flood(t, ns, d)
		time.Sleep(200 * time.Millisecond)
		t.Logf("naive go-nfqueue: sent %.0f pps, copies %.0f/s (%.0f%% of sent)", float64(sent)/took.Seconds(),
			float64(naive.Load())/took.Seconds(), 100*float64(naive.Load())/float64(sent))
		cancel()
		nf.Close()

		var led Ledger
		q := NewCopyQueue(8192, 0)
		qr, err := NewQueueReader(QueueConfig{Num: 0, NetNS: ns.FD}, q, &led)
		if err != nil {
			t.Fatal(err)
		}
		cs := &countSink{led: &led}
		ctx, cancel = context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); qr.Run(ctx) }()
		go func() { defer wg.Done(); RunWorkers(ctx, q, 1, cs.send) }()
		sent, took = flood(t, ns, d)
		time.Sleep(200 * time.Millisecond)
		cancel()
		wg.Wait()
		qr.Close()
		s := led.Snapshot()
		t.Logf("QueueReader: sent %.0f pps, copies %.0f/s (%.0f%% of sent), %.1f packets/verdict, ledger %+v",
			float64(sent)/took.Seconds(), float64(cs.n.Load())/took.Seconds(), 100*float64(cs.n.Load())/float64(sent),
			float64(qr.Stats().Packets)/float64(qr.Stats().Verdicts), s)
	}
}
