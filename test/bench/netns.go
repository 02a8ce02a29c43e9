package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// inNetns runs fn on an OS thread switched into the named network namespace
// (/run/netns/NAME). Sockets fn creates stay in that namespace after the
// thread switches back. If switching back fails the thread stays locked and
// dies with its goroutine, so no other goroutine ever runs in the lab.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("setns back: %w", err)) // thread stays locked: discarded
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// udpSocketIn opens a blocking IPv4 UDP socket in namespace ns, bound to
// bind (port 0: any) and, if peer is valid, connected to it. Reads time out
// after 100 ms so loops can notice a stop request.
func udpSocketIn(ns string, bind, peer netip.AddrPort) (int, error) {
	fd := -1
	err := inNetns(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(bind.Port()), Addr: bind.Addr().As4()}); err != nil {
			return fmt.Errorf("bind %v: %w", bind, err)
		}
		if peer.IsValid() {
			if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(peer.Port()), Addr: peer.Addr().As4()}); err != nil {
				return fmt.Errorf("connect %v: %w", peer, err)
			}
		}
		return nil
	})
	if err != nil && fd >= 0 {
		unix.Close(fd)
		fd = -1
	}
	return fd, err
}

// Latency summarises the round-trip times of one probe run, in microseconds.
type Latency struct {
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	Lost     int     `json:"lost"`
	RatePPS  float64 `json:"rate_pps"`
	MeanUS   float64 `json:"mean_us"`
	P50US    float64 `json:"p50_us"`
	P90US    float64 `json:"p90_us"`
	P99US    float64 `json:"p99_us"`
	P999US   float64 `json:"p999_us"`
	MaxUS    float64 `json:"max_us"`
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if k < 0 {
		k = 0
	}
	if k >= len(sorted) {
		k = len(sorted) - 1
	}
	return sorted[k]
}

func summarize(rtts []float64, sent int, elapsed time.Duration) Latency {
	sort.Float64s(rtts)
	l := Latency{Sent: sent, Received: len(rtts), Lost: sent - len(rtts)}
	if elapsed > 0 {
		l.RatePPS = float64(sent) / elapsed.Seconds()
	}
	if len(rtts) == 0 {
		return l
	}
	var sum float64
	for _, v := range rtts {
		sum += v
	}
	l.MeanUS = sum / float64(len(rtts))
	l.P50US = percentile(rtts, 50)
	l.P90US = percentile(rtts, 90)
	l.P99US = percentile(rtts, 99)
	l.P999US = percentile(rtts, 99.9)
	l.MaxUS = rtts[len(rtts)-1]
	return l
}

const probePayload = 18 // same 64-byte frames as the load generator's

// probeLatency sends UDP probes from srcNS (bound to src) to dst in dstNS at
// pps for d and measures each probe's one-way latency through the engine:
// the kernel's receive timestamp on the destination socket (SO_TIMESTAMPNS,
// CLOCK_REALTIME) minus the sender's clock just before the send. All
// namespaces share one kernel clock, so no echo and no return path (and no
// wake-up of a receiving thread) is in the figure. The warm probes are not
// counted.
func probeLatency(ctx context.Context, srcNS, dstNS string, src, dst netip.AddrPort, pps int, warm, d time.Duration) (Latency, error) {
	srv, err := udpSocketIn(dstNS, netip.AddrPortFrom(netip.IPv4Unspecified(), dst.Port()), netip.AddrPort{})
	if err != nil {
		return Latency{}, err
	}
	if err := unix.SetsockoptInt(srv, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		unix.Close(srv)
		return Latency{}, fmt.Errorf("SO_TIMESTAMPNS: %w", err)
	}
	cli, err := udpSocketIn(srcNS, src, dst)
	if err != nil {
		unix.Close(srv)
		return Latency{}, err
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	defer func() {
		stop.Store(true)
		wg.Wait()
		unix.Close(srv)
		unix.Close(cli)
	}()

	measureFrom := uint64(math.MaxUint64)
	var lat []float64
	var rmu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		buf := make([]byte, 2048)
		oob := make([]byte, 256)
		for !stop.Load() {
			n, oobn, _, _, err := unix.Recvmsg(srv, buf, oob, 0)
			if err != nil || n < 16 {
				continue
			}
			rx, ok := rxTimestamp(oob[:oobn])
			if !ok {
				continue
			}
			seq := binary.BigEndian.Uint64(buf[0:8])
			sent := int64(binary.BigEndian.Uint64(buf[8:16]))
			rmu.Lock()
			if seq >= measureFrom {
				lat = append(lat, float64(rx-sent)/1e3)
			}
			rmu.Unlock()
		}
	}()

	interval := time.Second / time.Duration(pps)
	pkt := make([]byte, probePayload)
	var seq uint64
	send := func() {
		binary.BigEndian.PutUint64(pkt[0:8], seq)
		binary.BigEndian.PutUint64(pkt[8:16], uint64(time.Now().UnixNano()))
		_, _ = unix.Write(cli, pkt)
		seq++
	}
	pace := func(dur time.Duration) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		start := time.Now()
		next := start
		for time.Since(start) < dur && ctx.Err() == nil {
			send()
			next = next.Add(interval)
			if w := time.Until(next); w > 0 {
				time.Sleep(w)
			}
		}
	}
	pace(warm)
	time.Sleep(20 * time.Millisecond)
	rmu.Lock()
	measureFrom = seq
	rmu.Unlock()
	first := seq
	t0 := time.Now()
	pace(d)
	elapsed := time.Since(t0)
	sent := int(seq - first)
	time.Sleep(200 * time.Millisecond) // late probes
	if err := ctx.Err(); err != nil {
		return Latency{}, err
	}
	rmu.Lock()
	got := append([]float64(nil), lat...)
	rmu.Unlock()
	return summarize(got, sent, elapsed), nil
}

// rxTimestamp extracts SCM_TIMESTAMPNS (ns since the epoch) from control messages.
func rxTimestamp(oob []byte) (int64, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			return sec*1e9 + nsec, true
		}
	}
	return 0, false
}
