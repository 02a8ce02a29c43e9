// Package mmsg is nfclone's one place for recvmmsg(2) and sendmmsg(2): the
// syscalls, and the setup of their headers over caller-owned buffers. None
// of it allocates: the headers, iovecs, addresses and buffers belong to the
// caller, who keeps them for as long as the kernel may read them (the
// duration of the syscall) and usually for ever.
package mmsg

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Recv is recvmmsg(fd, hdrs, flags) once: it returns the number of
// messages received, or the errno (EINTR and EAGAIN included: the caller
// decides). hdrs must not be empty.
func Recv(fd int, hdrs []unix.Mmsghdr, flags int) (int, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])),
		uintptr(len(hdrs)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// Send is sendmmsg(fd, hdrs, 0), retried on EINTR: it returns how many
// messages the kernel took (from the first), and its error when it took
// none of them or stopped at one. hdrs must not be empty.
func Send(fd int, hdrs []unix.Mmsghdr) (int, error) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])),
			uintptr(len(hdrs)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return int(r), e
		}
		return int(r), nil
	}
}

// Iov points iov at the buffer b (not empty).
func Iov(iov *unix.Iovec, b []byte) {
	iov.Base = &b[0]
	iov.SetLen(len(b))
}

// Point makes h a message of the one buffer b (not empty), through iov:
// no address, no control data.
func Point(h *unix.Mmsghdr, iov *unix.Iovec, b []byte) {
	Iov(iov, b)
	*h = unix.Mmsghdr{}
	h.Hdr.Iov = iov
	h.Hdr.SetIovlen(1)
}

// Inet4 sets h's address (sendmmsg: the destination) to sa.
func Inet4(h *unix.Mmsghdr, sa *unix.RawSockaddrInet4) {
	h.Hdr.Name = (*byte)(unsafe.Pointer(sa))
	h.Hdr.Namelen = unix.SizeofSockaddrInet4
}

// Inet6 sets h's address to sa: the destination (sendmmsg), or where
// recvmmsg writes the source (room for an IPv4 or IPv6 address).
func Inet6(h *unix.Mmsghdr, sa *unix.RawSockaddrInet6) {
	h.Hdr.Name = (*byte)(unsafe.Pointer(sa))
	h.Hdr.Namelen = unix.SizeofSockaddrInet6
}

// Linklayer sets h's address (a packet socket's destination) to sa.
func Linklayer(h *unix.Mmsghdr, sa *unix.RawSockaddrLinklayer) {
	h.Hdr.Name = (*byte)(unsafe.Pointer(sa))
	h.Hdr.Namelen = unix.SizeofSockaddrLinklayer
}

// Control gives h the control buffer oob (not empty; recvmmsg writes
// ancillary data there).
func Control(h *unix.Mmsghdr, oob []byte) {
	h.Hdr.Control = &oob[0]
	h.Hdr.SetControllen(len(oob))
}

// RecvBatch is the headers of a receive loop over buffers fixed for its
// life: set up once, they are passed to recvmmsg again and again.
type RecvBatch struct {
	Hdrs []unix.Mmsghdr
	iovs []unix.Iovec
}

// NewRecvBatch points one header at each buffer (none empty).
func NewRecvBatch(bufs [][]byte) RecvBatch {
	b := RecvBatch{Hdrs: make([]unix.Mmsghdr, len(bufs)), iovs: make([]unix.Iovec, len(bufs))}
	for i := range bufs {
		Point(&b.Hdrs[i], &b.iovs[i], bufs[i])
	}
	return b
}

// Repoint makes buf (not empty) the buffer of message i.
func (b *RecvBatch) Repoint(i int, buf []byte) { Iov(&b.iovs[i], buf) }

// Recv receives into the batch's first n buffers (at least one, all of
// them if n is larger; see Recv).
func (b *RecvBatch) Recv(fd, n, flags int) (int, unix.Errno) {
	return Recv(fd, b.Hdrs[:min(max(n, 1), len(b.Hdrs))], flags)
}

// Results copies the lengths of n received messages to lens, and whether
// each was longer than its buffer (MSG_TRUNC) to trunc.
func (b *RecvBatch) Results(n int, lens []int, trunc []bool) {
	for i := 0; i < n; i++ {
		lens[i] = int(b.Hdrs[i].Len)
		trunc[i] = b.Hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0
	}
}
