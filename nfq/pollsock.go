package nfq

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// pollNL is nlSocket on a netlink socket that is not in the Go netpoller and
// is polled, never waited on: reads use MSG_DONTWAIT, and after a read that
// did not fill every buffer the reader sleeps (the coalescing interval, then
// doubling up to pollIdleMax while nothing comes). Under load the kernel
// queues packets without waking anyone — no sleeper on the socket, no epoll
// callback waking the runtime — and one recvmmsg fetches hundreds. Used for
// queues of clones, whose originals never wait for the reader: the interval
// delays copies, never originals. (A blocking recvmmsg would keep its P in
// the syscall state until sysmon retakes it, delaying the workers by
// milliseconds: copies came out of order in the lab.)
type pollNL struct {
	mmsgSock
	coalesce time.Duration
	short    bool         // the last read left buffers unused
	deadline atomic.Int64 // unix nanoseconds, 0 = none
	closed   atomic.Bool
}

// pollIdleMax bounds the sleep between empty reads (the added copy latency
// after an idle period).
const pollIdleMax = 4 * time.Millisecond

// newPollNL takes over the socket of c: it duplicates the descriptor and
// sets the receive buffer; the caller then closes c, which removes c's
// descriptor from the netpoller (the socket, its bindings and its port id
// live on in the duplicate).
func newPollNL(c *netlink.Conn, rcvbuf int, coalesce time.Duration) (*pollNL, error) {
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
	return s, nil
}

func (s *pollNL) expired() bool {
	d := s.deadline.Load()
	return d != 0 && time.Now().UnixNano() >= d
}

func (s *pollNL) RecvBatch(lens []int, trunc []bool, block bool) (int, error) {
	if s.closed.Load() {
		return 0, os.ErrClosed
	}
	wait := s.coalesce
	if !s.short {
		wait = 0 // the last read filled every buffer: more is waiting
	}
	for {
		if block && s.expired() {
			return 0, os.ErrDeadlineExceeded
		}
		if block && wait > 0 {
			time.Sleep(wait)
			if s.closed.Load() {
				return 0, os.ErrClosed
			}
		}
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.hdrs[0])),
			uintptr(len(s.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			s.short = true
			if !block {
				return 0, nil
			}
			wait = min(max(2*wait, s.coalesce), pollIdleMax)
			continue
		case e == unix.EBADF && s.closed.Load():
			return 0, os.ErrClosed
		case e != 0:
			return 0, e
		}
		n := int(r)
		s.results(n, lens, trunc)
		s.short = n < len(s.hdrs)
		return n, nil
	}
}

// SetReadDeadline: a past time interrupts a waiting RecvBatch within
// pollIdleMax, the zero time clears the deadline.
func (s *pollNL) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		s.deadline.Store(0)
	} else {
		s.deadline.Store(t.UnixNano())
	}
	return nil
}

// Close closes the socket. Call it after the reader has stopped.
func (s *pollNL) Close() error {
	if s.closed.Swap(true) {
		return nil
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
