package nfq

import (
	"errors"
	"fmt"
	"time"

	"github.com/nfclone/nfclone/internal/mmsg"
	"golang.org/x/sys/unix"
)

// nlSocket is the kernel boundary of a reader: a netlink socket that
// receives batches of datagrams and sends messages (config, verdicts). The
// real one is pollNL (pollsock.go); tests use a fake that feeds canned
// nfnetlink messages and records verdicts.
type nlSocket interface {
	// Prepare is called once with the receive buffers RecvBatch fills.
	Prepare(bufs [][]byte)
	// Rebuf makes b the receive buffer of slot i from the next RecvBatch
	// on (the reader kept the old one's packet).
	Rebuf(i int, b []byte)
	// RecvBatch receives up to len(lens) datagrams (at most one per
	// prepared buffer) into the first prepared buffers, setting lens[i] and trunc[i] (datagram longer than its
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

func isENOBUFS(err error) bool { return errors.Is(err, unix.ENOBUFS) }

// mmsgSock is the descriptor of a netlink socket and the recvmmsg headers
// over the reader's buffers.
type mmsgSock struct {
	fd int
	mmsg.RecvBatch
}

// Prepare points one recvmmsg header at each buffer.
func (s *mmsgSock) Prepare(bufs [][]byte) { s.RecvBatch = mmsg.NewRecvBatch(bufs) }

// Rebuf points header i at b.
func (s *mmsgSock) Rebuf(i int, b []byte) { s.RecvBatch.Repoint(i, b) }

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
