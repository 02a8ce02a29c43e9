package nfq

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// pollNL is nlSocket on a netlink socket that is polled, not waited on,
// while copies flow: reads use MSG_DONTWAIT, and after a read that did not
// fill every buffer the reader sleeps (the coalescing interval, then
// doubling up to pollIdleMax while nothing comes). Under load the kernel
// queues packets without waking anyone — no sleeper on the socket, no epoll
// callback waking the runtime — and one recvmmsg fetches hundreds. Used for
// queues of clones and NFLOG, whose originals never wait for the reader:
// the interval delays copies, never originals. A queue of held originals
// (wake) never sleeps: the interval would delay the originals, and a Go
// sleep under a millisecond lasts about one when the runtime is idle (one
// TCP flow through a hold session went 5.2 Gbit/s with its RTT at 1.6 ms;
// waking in the netpoller instead, 6–7 Gbit/s); it waits for the next
// packet in the netpoller. The time a copy is read
// stamps it where the kernel gives no time (clones, egress), so the idle
// back-off is capped at 1 ms (it was 4 ms: copies after a pause were
// stamped up to 4 ms late). After parkAfter without a packet the reader
// parks in the Go netpoller instead, on a duplicate of the socket
// registered only for that wait: an idle session costs no wake-ups, the
// first copy after a long pause is read at once, and while copies flow the
// socket is in no epoll set. (A blocking recvmmsg or poll would keep its P
// in the syscall state until sysmon retakes it, delaying the workers by
// milliseconds: copies came out of order in the lab; the netpoller holds
// no P.)
type pollNL struct {
	mmsgSock
	coalesce time.Duration
	// reg (queues of held originals: wake) is the socket's netpoller
	// registration for its whole life, set by newPollNL: with it a read
	// never sleeps and waits for the next packet in the netpoller.
	reg      *os.File
	short    bool         // the last read left buffers unused
	idle     time.Time    // when reads started finding nothing (zero: they find packets)
	deadline atomic.Int64 // unix nanoseconds, 0 = none
	closed   atomic.Bool
	parked   atomic.Pointer[os.File] // the netpoller registration of a park, while it lasts
}

const (
	// pollIdleMax bounds the sleep between empty reads (the added copy
	// latency, and the error of a read-time stamp, after a pause).
	pollIdleMax = time.Millisecond
	// parkAfter is how long reads find nothing before the reader parks in
	// the netpoller.
	parkAfter = 50 * time.Millisecond
	// parkMax bounds one park (SetReadDeadline and Close end one at once;
	// this is a backstop).
	parkMax = 100 * time.Millisecond
)

// newPollNL takes over the socket of c: it duplicates the descriptor and
// sets the receive buffer; the caller then closes c, which removes c's
// descriptor from the netpoller (the socket, its bindings and its port id
// live on in the duplicate).
func newPollNL(c *netlink.Conn, rcvbuf int, coalesce time.Duration, wake bool) (*pollNL, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &pollNL{mmsgSock: mmsgSock{fd: -1}, coalesce: coalesce}
	var serr error
	err = rc.Control(func(fd uintptr) {
		nfd, e := unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
		if e != nil {
			serr = fmt.Errorf("nfq: duplicating the netlink socket: %w", e)
			return
		}
		s.fd = nfd
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return nil, err
	}
	if err := s.setRcvBuf(rcvbuf); err != nil {
		s.Close()
		return nil, err
	}
	s.keepTimestamps()
	if wake {
		if s.reg, err = s.register(); err != nil {
			s.Close()
			return nil, fmt.Errorf("nfq: registering the netlink socket: %w", err)
		}
	}
	return s, nil
}

func (s *pollNL) expired() bool {
	d := s.deadline.Load()
	return d != 0 && time.Now().UnixNano() >= d
}

// recv receives into the first n prepared buffers.
func (s *pollNL) recv(n int) (int, unix.Errno) { return s.Recv(s.fd, n, unix.MSG_DONTWAIT) }

// register returns a duplicate of the socket registered in the netpoller.
func (s *pollNL) register() (*os.File, error) {
	fd, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil { // so that os.NewFile registers it
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "netlink"), nil
}

// park waits in the netpoller until the socket is readable or parkMax has
// passed, on a duplicate descriptor registered for this wait only (or on
// reg).
func (s *pollNL) park() {
	f := s.reg
	if f == nil {
		var err error
		if f, err = s.register(); err != nil {
			time.Sleep(pollIdleMax)
			return
		}
	}
	s.parked.Store(f)
	defer func() {
		s.parked.Store(nil)
		if f != s.reg {
			f.Close()
		}
	}()
	if s.closed.Load() || s.expired() { // set before the park was visible
		return
	}
	rc, err := f.SyscallConn()
	if err != nil {
		time.Sleep(pollIdleMax)
		return
	}
	f.SetReadDeadline(time.Now().Add(parkMax))
	var pfd [1]unix.PollFd
	_ = rc.Read(func(fd uintptr) bool {
		pfd[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		n, _ := unix.Poll(pfd[:], 0)
		return n > 0 // readable: stop waiting (the caller reads)
	})
}

func (s *pollNL) RecvBatch(lens []int, trunc []bool, block bool) (int, error) {
	if s.closed.Load() {
		return 0, os.ErrClosed
	}
	wait := s.coalesce
	if !s.short || s.reg != nil {
		wait = 0 // the last read filled every buffer (more is waiting), or a wait delays originals
	}
	for {
		if block && s.expired() {
			return 0, os.ErrDeadlineExceeded
		}
		if block && wait > 0 {
			if !s.idle.IsZero() && time.Since(s.idle) >= parkAfter {
				s.park()
			} else {
				time.Sleep(wait)
			}
			if s.closed.Load() {
				return 0, os.ErrClosed
			}
		}
		n, e := s.recv(len(lens))
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			s.short = true
			if s.idle.IsZero() {
				s.idle = time.Now()
			}
			if !block {
				return 0, nil
			}
			if s.reg != nil {
				s.park()
				if s.closed.Load() {
					return 0, os.ErrClosed
				}
				continue
			}
			wait = min(max(2*wait, s.coalesce), pollIdleMax)
			continue
		case e == unix.EBADF && s.closed.Load():
			return 0, os.ErrClosed
		case e != 0:
			return 0, e
		}
		s.idle = time.Time{}
		s.Results(n, lens, trunc)
		s.short = n < min(len(lens), len(s.Hdrs))
		return n, nil
	}
}

// SetReadDeadline: a past time interrupts a waiting RecvBatch at once (a
// sleep within pollIdleMax), the zero time clears the deadline.
func (s *pollNL) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		s.deadline.Store(0)
		return nil
	}
	s.deadline.Store(t.UnixNano())
	if f := s.parked.Load(); f != nil && !t.After(time.Now()) {
		f.SetReadDeadline(t) // end a park at once
	}
	return nil
}

// Close closes the socket. Call it after the reader has stopped.
func (s *pollNL) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if f := s.parked.Load(); f != nil {
		f.SetReadDeadline(time.Unix(1, 0)) // end a park at once
	}
	if s.reg != nil {
		s.reg.Close()
	}
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	if errors.Is(err, unix.EINTR) {
		err = nil
	}
	return err
}
