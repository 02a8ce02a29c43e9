package nfq

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// routeDump is an RTM_GETLINK dump request: the kernel answers on the
// socket, which makes it readable (no privilege needed).
func routeDump() []byte {
	b := make([]byte, 16+16)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], unix.RTM_GETLINK)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	b[16] = unix.AF_UNSPEC
	return b
}

func newTestPollNL(t *testing.T, wake bool) *pollNL {
	t.Helper()
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		t.Skipf("netlink: %v", err)
	}
	s, err := newPollNL(c, 0, 250*time.Microsecond, wake)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, 32<<10)
	}
	s.Prepare(bufs)
	return s
}

// The socket production reads: an idle reader parks in the netpoller after
// parkAfter and wakes as soon as the socket is readable; a deadline in the
// past ends a park at once; a read with nothing there returns at once when
// not blocking.
func TestPollNL(t *testing.T) {
	s := newTestPollNL(t, false)
	lens, trunc := make([]int, 4), make([]bool, 4)
	if n, err := s.RecvBatch(lens, trunc, false); n != 0 || err != nil {
		t.Fatalf("non-blocking read of an empty socket: %d %v", n, err)
	}

	// Idle long enough to park, then the kernel answers a request.
	sent := make(chan time.Time, 1)
	go func() {
		time.Sleep(parkAfter + 30*time.Millisecond)
		sent <- time.Now()
		if err := s.Send(routeDump()); err != nil {
			t.Errorf("send: %v", err)
		}
	}()
	n, err := s.RecvBatch(lens, trunc, true)
	got := time.Now()
	if n < 1 || err != nil {
		t.Fatalf("blocking read: %d %v", n, err)
	}
	if lat := got.Sub(<-sent); lat > 20*time.Millisecond { // parkMax is 100 ms
		t.Errorf("a parked reader read %v after the socket became readable", lat)
	}
	for { // drain the dump
		if n, _ := s.RecvBatch(lens, trunc, false); n == 0 {
			break
		}
	}

	// A deadline in the past ends a park.
	endsWaits(t, s, parkAfter+30*time.Millisecond)
}

// endsWaits checks that a deadline in the past ends a read waiting for
// idle at once, and that a read after Close says so.
func endsWaits(t *testing.T, s *pollNL, idle time.Duration) {
	t.Helper()
	lens, trunc := make([]int, 4), make([]bool, 4)
	done := make(chan error, 1)
	go func() {
		_, err := s.RecvBatch(lens, trunc, true)
		done <- err
	}()
	time.Sleep(idle)
	set := time.Now()
	s.SetReadDeadline(time.Unix(1, 0))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("after the deadline: %v", err)
		}
		if d := time.Since(set); d > 20*time.Millisecond {
			t.Errorf("the deadline ended the wait after %v", d)
		}
	case <-time.After(time.Second):
		t.Fatal("a past deadline did not end the wait")
	}
	s.SetReadDeadline(time.Time{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecvBatch(lens, trunc, true); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
}

// A reader of held originals (wake) reads a packet as soon as it comes: it
// never sleeps between reads (a Go sleep under a millisecond lasts about one
// when the runtime is idle, and each would delay originals), it waits in
// the netpoller. Measured here: the sleeping reader's median delay 1.1 ms,
// the waking one's 30–60 µs. A deadline and Close end its wait at once.
func TestPollNLWake(t *testing.T) {
	s := newTestPollNL(t, true)
	lens, trunc := make([]int, 4), make([]bool, 4)
	var lat []time.Duration
	for i := 0; i < 15; i++ {
		sent := make(chan time.Time, 1)
		go func() {
			time.Sleep(5 * time.Millisecond) // long enough for a sleeping reader to back off
			sent <- time.Now()
			if err := s.Send(routeDump()); err != nil {
				t.Errorf("send: %v", err)
			}
		}()
		if n, err := s.RecvBatch(lens, trunc, true); n < 1 || err != nil {
			t.Fatalf("blocking read: %d %v", n, err)
		}
		lat = append(lat, time.Since(<-sent))
		for { // drain the dump
			if n, _ := s.RecvBatch(lens, trunc, false); n == 0 {
				break
			}
		}
	}
	slices.Sort(lat)
	if med := lat[len(lat)/2]; med > 600*time.Microsecond {
		t.Errorf("median delay from readable to read %v (min %v, max %v), want well under the sleeping reader's 1 ms", med, lat[0], lat[len(lat)-1])
	}

	endsWaits(t, s, 10*time.Millisecond)
}
