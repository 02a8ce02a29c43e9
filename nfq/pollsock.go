package nfq

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// pollNL is nlSocket on a netlink socket that is polled while copies flow
// and waited on only when none come: reads use MSG_DONTWAIT, and after a
// read that did not fill every buffer the reader sleeps for the coalescing
// interval before reading again. Under load the kernel queues packets
// without waking anyone and one recvmmsg fetches hundreds. Used for queues
// of clones and NFLOG, whose originals never wait for the reader: the
// interval delays copies, never originals. When a read finds nothing, the
// reader parks in the Go netpoller until the socket is readable (a
// duplicate descriptor registered there): an idle session costs no
// wake-ups, and the first copy after a pause is read at once — the time a
// copy is read stamps it where the kernel gives no time (clones, egress),
// so this bounds the stamp's error by the coalescing interval (it was up to
// the 4 ms of the former idle back-off). (A blocking recvmmsg would keep
// its P in the syscall state until sysmon retakes it, delaying the workers
// by milliseconds: copies came out of order in the lab; the netpoller holds
// no P.)
type pollNL struct {
	mmsgSock
	coalesce time.Duration
	short    bool         // the last read left buffers unused
	deadline atomic.Int64 // unix nanoseconds, 0 = none
	closed   atomic.Bool
	wait     *os.File        // a duplicate of fd in the netpoller, for idle waits
	rc       syscall.RawConn // wait's
}

// pollIdleMax bounds an idle wait in the netpoller, so that a deadline set
// while it waits takes effect within it.
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
	wfd := -1
	err = rc.Control(func(fd uintptr) {
		nfd, e := unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
		if e != nil {
			serr = fmt.Errorf("nfq: duplicating the netlink socket: %w", e)
			return
		}
		s.fd = nfd
		if wfd, e = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); e != nil {
			serr = fmt.Errorf("nfq: duplicating the netlink socket: %w", e)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		if wfd >= 0 {
			unix.Close(wfd)
		}
		s.Close()
		return nil, err
	}
	// Non-blocking, so os.NewFile registers it in the netpoller.
	if err := unix.SetNonblock(wfd, true); err != nil {
		unix.Close(wfd)
		s.Close()
		return nil, fmt.Errorf("nfq: netlink socket: %w", err)
	}
	s.wait = os.NewFile(uintptr(wfd), "netlink")
	if s.rc, err = s.wait.SyscallConn(); err != nil {
		s.Close()
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

func (s *pollNL) recv() (int, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.hdrs[0])),
		uintptr(len(s.hdrs)), unix.MSG_DONTWAIT, 0, 0)
	return int(r), e
}

func (s *pollNL) RecvBatch(lens []int, trunc []bool, block bool) (int, error) {
	if s.closed.Load() {
		return 0, os.ErrClosed
	}
	coalesce := s.short
	for {
		if block && s.expired() {
			return 0, os.ErrDeadlineExceeded
		}
		if block && coalesce && s.coalesce > 0 {
			time.Sleep(s.coalesce)
			if s.closed.Load() {
				return 0, os.ErrClosed
			}
		}
		n, e := s.recv()
		switch {
		case e == unix.EINTR:
			coalesce = false
			continue
		case e == unix.EAGAIN:
			s.short = true
			if !block {
				return 0, nil
			}
			// Nothing queued: park until the socket is readable (or
			// pollIdleMax passes, to look at the deadline again), then
			// read at once.
			s.wait.SetReadDeadline(time.Now().Add(pollIdleMax))
			var got int
			var ge unix.Errno
			err := s.rc.Read(func(uintptr) bool {
				got, ge = s.recv()
				return ge != unix.EAGAIN
			})
			switch {
			case err != nil && s.closed.Load():
				return 0, os.ErrClosed
			case err != nil:
				coalesce = false // timed out: look again
				continue
			case ge == unix.EINTR:
				coalesce = false
				continue
			case ge == unix.EBADF && s.closed.Load():
				return 0, os.ErrClosed
			case ge != 0:
				return 0, ge
			}
			s.results(got, lens, trunc)
			s.short = got < len(s.hdrs)
			return got, nil
		case e == unix.EBADF && s.closed.Load():
			return 0, os.ErrClosed
		case e != 0:
			return 0, e
		}
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
	if s.wait != nil {
		s.wait.Close()
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
