package mmsg

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// dgramPair returns a connected pair of unix datagram sockets.
func dgramPair(t *testing.T) (a, b int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

// A batch sent with one sendmmsg arrives, message by message, in one
// recvmmsg; a message longer than its buffer is flagged truncated; nothing
// waits without MSG_DONTWAIT being honoured.
func TestSendRecv(t *testing.T) {
	a, b := dgramPair(t)
	msgs := [][]byte{[]byte("one"), []byte("second message"), bytes.Repeat([]byte{7}, 100)}
	hdrs := make([]unix.Mmsghdr, len(msgs))
	iovs := make([]unix.Iovec, len(msgs))
	for i, m := range msgs {
		Point(&hdrs[i], &iovs[i], m)
	}
	if n, err := Send(a, hdrs); n != 3 || err != nil {
		t.Fatalf("Send = %d, %v", n, err)
	}
	bufs := [][]byte{make([]byte, 64), make([]byte, 64), make([]byte, 64), make([]byte, 64)}
	rb := NewRecvBatch(bufs)
	lens, trunc := make([]int, 4), make([]bool, 4)
	// Asked for two, it takes two of the three waiting.
	n, e := rb.Recv(b, 2, unix.MSG_DONTWAIT)
	if n != 2 || e != 0 {
		t.Fatalf("Recv(2) = %d, %v", n, e)
	}
	rb.Results(n, lens, trunc)
	for i, m := range msgs[:2] {
		if lens[i] != len(m) || trunc[i] || !bytes.Equal(bufs[i][:lens[i]], m) {
			t.Errorf("message %d: %q (len %d, trunc %v)", i, bufs[i][:lens[i]], lens[i], trunc[i])
		}
	}
	n, e = rb.Recv(b, 4, unix.MSG_DONTWAIT)
	if n != 1 || e != 0 {
		t.Fatalf("Recv(4) = %d, %v", n, e)
	}
	rb.Results(n, lens, trunc)
	if !trunc[0] {
		t.Errorf("a 100-byte message in a 64-byte buffer is not flagged truncated (len %d)", lens[0])
	}
	if n, e := rb.Recv(b, 4, unix.MSG_DONTWAIT); n != 0 || e != unix.EAGAIN {
		t.Fatalf("Recv on an empty socket = %d, %v; want EAGAIN", n, e)
	}
}

// Addresses and control buffers land where the kernel looks for them.
func TestAddressSetters(t *testing.T) {
	var h unix.Mmsghdr
	var iov unix.Iovec
	Point(&h, &iov, []byte{1, 2, 3})
	if h.Hdr.Iov != &iov || h.Hdr.Iovlen != 1 || iov.Len != 3 || h.Hdr.Name != nil {
		t.Fatalf("Point: %+v %+v", h, iov)
	}
	var sa4 unix.RawSockaddrInet4
	Inet4(&h, &sa4)
	if h.Hdr.Namelen != unix.SizeofSockaddrInet4 {
		t.Errorf("Inet4 namelen %d", h.Hdr.Namelen)
	}
	var sa6 unix.RawSockaddrInet6
	Inet6(&h, &sa6)
	if h.Hdr.Namelen != unix.SizeofSockaddrInet6 {
		t.Errorf("Inet6 namelen %d", h.Hdr.Namelen)
	}
	var ll unix.RawSockaddrLinklayer
	Linklayer(&h, &ll)
	if h.Hdr.Namelen != unix.SizeofSockaddrLinklayer {
		t.Errorf("Linklayer namelen %d", h.Hdr.Namelen)
	}
	oob := make([]byte, 32)
	Control(&h, oob)
	if h.Hdr.Control != &oob[0] || h.Hdr.Controllen != 32 {
		t.Errorf("Control: %+v", h.Hdr)
	}
	// Point starts the header afresh.
	Point(&h, &iov, []byte{1})
	if h.Hdr.Name != nil || h.Hdr.Control != nil {
		t.Errorf("Point kept an old address or control buffer")
	}
}

// Setting up, sending and receiving a batch allocates nothing.
func TestMmsgNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("-race instruments allocations; make allocs runs this without it")
	}
	a, b := dgramPair(t)
	payload := make([]byte, 200)
	hdrs := make([]unix.Mmsghdr, 32)
	iovs := make([]unix.Iovec, 32)
	sas := make([]unix.RawSockaddrInet6, 32)
	bufs := make([][]byte, 32)
	for i := range bufs {
		bufs[i] = make([]byte, 256)
	}
	rb := NewRecvBatch(bufs)
	lens, trunc := make([]int, 32), make([]bool, 32)
	send := func() {
		for i := range hdrs {
			Point(&hdrs[i], &iovs[i], payload)
		}
		if n, err := Send(a, hdrs); n != 32 || err != nil {
			t.Fatalf("Send = %d, %v", n, err)
		}
	}
	allocs := testing.AllocsPerRun(200, func() {
		// Headers set up per call, with an address (as collect does) ...
		send()
		for i := range hdrs {
			Point(&hdrs[i], &iovs[i], bufs[i])
			Inet6(&hdrs[i], &sas[i])
		}
		if n, e := Recv(b, hdrs, unix.MSG_DONTWAIT); n != 32 || e != 0 {
			t.Fatalf("Recv = %d, %v", n, e)
		}
		// ... and set up once (as the netlink readers do).
		send()
		n, e := rb.Recv(b, len(rb.Hdrs), unix.MSG_DONTWAIT)
		if n != 32 || e != 0 {
			t.Fatalf("RecvBatch.Recv = %d, %v", n, e)
		}
		rb.Results(n, lens, trunc)
	})
	if allocs > 0 {
		t.Errorf("a batch of 32 allocates %.1f times", allocs)
	}
}
