package nfq

import (
	"errors"
	"fmt"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nlSocket is the kernel boundary of a reader: a netlink socket that
// receives batches of datagrams and sends messages (config, verdicts). The
// real one is rawNL; tests use a fake that feeds canned nfnetlink messages
// and records verdicts.
type nlSocket interface {
	// Prepare is called once with the receive buffers RecvBatch fills.
	Prepare(bufs [][]byte)
	// RecvBatch receives up to len(bufs) datagrams into the prepared
	// buffers, setting lens[i] and trunc[i] (datagram longer than its
	// buffer). With block it waits until at least one datagram is available
	// or the read deadline passes; without it, it returns 0 at once when
	// there is nothing to read.
	RecvBatch(lens []int, trunc []bool, block bool) (int, error)
	// Send sends one netlink message to the kernel.
	Send(b []byte) error
	// SetReadDeadline interrupts (past time) or re-arms (zero time) RecvBatch.
	SetReadDeadline(t time.Time) error
	Close() error
}

// rawNL is nlSocket on a netlink.Conn opened by go-nfqueue / go-nflog: it
// uses the connection's file descriptor directly so that one recvmmsg(2)
// fetches many datagrams into buffers that are reused forever, with no
// MSG_PEEK and no allocation per message; blocking waits go through the Go
// netpoller (RawConn.Read), so read deadlines unblock it.
type rawNL struct {
	mmsgSock
	conn   *netlink.Conn
	rc     syscall.RawConn
	block  bool
	n      int
	errno  syscall.Errno
	readFn func(fd uintptr) bool
}

func newRawNL(c *netlink.Conn, rcvbuf int) (*rawNL, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &rawNL{mmsgSock: mmsgSock{fd: -1}, conn: c, rc: rc}
	var serr error
	err = rc.Control(func(fd uintptr) {
		s.fd = int(fd)
		serr = s.setRcvBuf(rcvbuf)
		s.keepTimestamps()
	})
	if err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	s.readFn = s.doRead
	return s, nil
}

func (s *rawNL) doRead(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.hdrs[0])),
			uintptr(len(s.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e == unix.EAGAIN && s.block {
			return false // wait for readability in the netpoller
		}
		if e != 0 {
			s.n, s.errno = 0, e
		} else {
			s.n, s.errno = int(r), 0
		}
		return true
	}
}

func (s *rawNL) RecvBatch(lens []int, trunc []bool, block bool) (int, error) {
	s.block = block
	if err := s.rc.Read(s.readFn); err != nil {
		return 0, err
	}
	if s.errno != 0 {
		if s.errno == unix.EAGAIN {
			return 0, nil
		}
		return 0, s.errno
	}
	s.results(s.n, lens, trunc)
	return s.n, nil
}

func (s *rawNL) SetReadDeadline(t time.Time) error { return s.conn.SetReadDeadline(t) }

func (s *rawNL) Close() error { return s.conn.Close() }

func isENOBUFS(err error) bool { return errors.Is(err, unix.ENOBUFS) }

// mmsgSock is what both netlink sockets share: the descriptor and the
// recvmmsg headers over the reader's buffers.
type mmsgSock struct {
	fd   int
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
}

// Prepare points one recvmmsg header at each buffer.
func (s *mmsgSock) Prepare(bufs [][]byte) {
	s.hdrs = make([]unix.Mmsghdr, len(bufs))
	s.iovs = make([]unix.Iovec, len(bufs))
	for i := range bufs {
		s.iovs[i].Base = &bufs[i][0]
		s.iovs[i].SetLen(len(bufs[i]))
		s.hdrs[i].Hdr.Iov = &s.iovs[i]
		s.hdrs[i].Hdr.SetIovlen(1)
	}
}

// results copies the lengths and truncation flags of n received datagrams.
func (s *mmsgSock) results(n int, lens []int, trunc []bool) {
	for i := 0; i < n; i++ {
		lens[i] = int(s.hdrs[i].Len)
		trunc[i] = s.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0
	}
}

// Send writes one netlink message.
func (s *mmsgSock) Send(b []byte) error {
	for {
		_, err := unix.Write(s.fd, b)
		if err == unix.EINTR {
			continue
		}
		return err
	}
}

// keepTimestamps asks for receive timestamps on the socket. The kernel
// stamps received packets (skb->tstamp, which NFQUEUE and NFLOG pass on as
// NFQA_TIMESTAMP / NFULA_TIMESTAMP) only while some socket on the host
// wants timestamps, so a reader keeps that on for as long as it is open.
// nfclone never reads the socket's own timestamps (recvmmsg gets no control
// buffer). Best effort: without it, copies get the time they were read.
func (s *mmsgSock) keepTimestamps() {
	_ = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
}

// setRcvBuf sets the receive buffer: SO_RCVBUFFORCE, or without
// CAP_NET_ADMIN the capped SO_RCVBUF.
func (s *mmsgSock) setRcvBuf(n int) error {
	if n <= 0 {
		return nil
	}
	if unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) == nil {
		return nil
	}
	if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n); err != nil {
		return fmt.Errorf("nfq: set receive buffer: %w", err)
	}
	return nil
}
