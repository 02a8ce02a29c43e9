package sink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/nfclone/nfclone/packet"
	"net"
	"sync"
	"testing"
	"unsafe"

	"github.com/nfclone/nfclone/pipeline"
	"golang.org/x/sys/unix"
)

func ipv4(n int, dst [4]byte) []byte {
	b := make([]byte, n)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
	b[8] = 64
	b[9] = 17
	copy(b[12:16], []byte{10, 77, 0, 1})
	copy(b[16:20], dst[:])
	binary.BigEndian.PutUint16(b[10:12], IPv4Checksum(b[:20]))
	for i := 20; i < n; i++ {
		b[i] = byte(i)
	}
	return b
}

func ipv6(n int) []byte {
	b := make([]byte, n)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(n-40))
	b[6], b[7] = 17, 64
	b[8], b[9], b[23] = 0xfd, 0x77, 1
	b[24], b[25], b[39] = 0xfd, 0x77, 2
	return b
}

// fakeSend records what sendmmsg would have sent and fails chosen
// datagrams (by a predicate on their bytes), like the kernel does: it sends
// up to the failing one, and returns the error if it is the first.
type fakeSend struct {
	mu    sync.Mutex
	calls int
	fds   []int
	got   [][]byte
	names [][]byte
	fail  func(b []byte) error
}

func (f *fakeSend) fn(fd int, hdrs []unix.Mmsghdr) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	for i := range hdrs {
		h := &hdrs[i].Hdr
		b := unsafe.Slice(h.Iov.Base, h.Iov.Len)
		if f.fail != nil {
			if err := f.fail(b); err != nil {
				if i == 0 {
					return -1, err
				}
				return i, nil
			}
		}
		f.got = append(f.got, append([]byte(nil), b...))
		f.names = append(f.names, append([]byte(nil), unsafe.Slice(h.Name, h.Namelen)...))
		f.fds = append(f.fds, fd)
		hdrs[i].Len = uint32(len(b))
	}
	return len(hdrs), nil
}

func pkts(datas ...[]byte) []*packet.Packet {
	out := make([]*packet.Packet, len(datas))
	for i, d := range datas {
		out[i] = packet.New(d)
	}
	return out
}

func TestIPv4Checksum(t *testing.T) {
	// RFC 1071 style example header
	h := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00,
		0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if c := IPv4Checksum(h); c != 0xb861 {
		t.Fatalf("checksum %#x, want 0xb861", c)
	}
	binary.BigEndian.PutUint16(h[10:12], 0xb861)
	if IPv4Checksum(h) != 0 {
		t.Fatal("verification of a valid header must give 0")
	}
}

func TestFixTruncated(t *testing.T) {
	full := ipv4(200, [4]byte{10, 77, 2, 2})
	p := packet.New(full[:64])
	p.OrigLen = 200
	FixTruncated(p)
	if binary.BigEndian.Uint16(p.Data[2:4]) != 64 || IPv4Checksum(p.Data[:20]) != 0 {
		t.Fatal("v4 truncated copy not fixed")
	}
	if !bytes.Equal(p.Data[20:], full[20:64]) {
		t.Fatal("payload changed")
	}
	FixTruncated(p) // idempotent
	if binary.BigEndian.Uint16(p.Data[2:4]) != 64 || IPv4Checksum(p.Data[:20]) != 0 {
		t.Fatal("not idempotent")
	}
	p6 := packet.New(ipv6(300)[:100])
	if p6.OrigLen != 300 || !p6.Truncated() {
		t.Fatal("v6 origlen")
	}
	FixTruncated(p6)
	if binary.BigEndian.Uint16(p6.Data[4:6]) != 60 {
		t.Fatal("v6 payload length")
	}
	whole := packet.New(full)
	FixTruncated(whole)
	if !bytes.Equal(whole.Data, full) {
		t.Fatal("untruncated copy must stay byte-identical")
	}
}

func TestGatewayBatchAndErrors(t *testing.T) {
	fs := &fakeSend{fail: func(b []byte) error {
		if b[0]>>4 == 4 && b[19] == 99 {
			return unix.EHOSTUNREACH
		}
		return nil
	}}
	g := newGateway("gw", 10, 11, fs.fn, nil)
	a := ipv4(100, [4]byte{10, 77, 2, 2})
	bad := ipv4(60, [4]byte{10, 77, 2, 99})
	batch := pkts(a, ipv6(80), bad, a, []byte{0x10, 1, 2})
	sent, err := g.Send(batch)
	if sent != 3 || !errors.Is(err, unix.EHOSTUNREACH) {
		t.Fatalf("sent %d err %v", sent, err)
	}
	if len(fs.got) != 3 || !bytes.Equal(fs.got[0], a) || !bytes.Equal(fs.got[1], a) || fs.got[2][0] != 0x60 {
		t.Fatalf("sent %d datagrams", len(fs.got))
	}
	if fs.fds[0] != 10 || fs.fds[2] != 11 {
		t.Fatalf("fds %v", fs.fds)
	}
	// destination sockaddr = the packet's own destination
	sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&fs.names[0][0]))
	if sa.Family != unix.AF_INET || sa.Addr != [4]byte{10, 77, 2, 2} {
		t.Fatalf("sockaddr %+v", sa)
	}
	sa6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(&fs.names[2][0]))
	if sa6.Family != unix.AF_INET6 || sa6.Addr[0] != 0xfd || sa6.Addr[15] != 2 {
		t.Fatalf("sockaddr6 %+v", sa6)
	}
	if batch[2].Errs != 1 || batch[4].Errs != 1 || batch[0].Errs != 0 {
		t.Fatal("Errs not set on failed copies")
	}
	st := g.Stats()
	if st.Sent != 3 || st.Errors != 2 || st.LastError == "" {
		t.Fatalf("stats %+v", st)
	}
	// calls: v4 [a] ok+fail → [bad] fail → [a]; v6 [x]
	if fs.calls != 4 {
		t.Fatalf("syscalls %d", fs.calls)
	}
}

func TestDeviceEthernetInHeadroom(t *testing.T) {
	fs := &fakeSend{}
	dst := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	src := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	d := newDevice("dev", 5, 7, dst, src, fs.fn, nil)
	a := ipv4(80, [4]byte{10, 77, 2, 2})
	batch := pkts(a, ipv6(60))
	if n, err := d.Send(batch); n != 2 || err != nil {
		t.Fatalf("%d %v", n, err)
	}
	want := append([]byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00}, a...)
	if !bytes.Equal(fs.got[0], want) {
		t.Fatalf("frame\n%x\nwant\n%x", fs.got[0], want)
	}
	if fs.got[1][12] != 0x86 || fs.got[1][13] != 0xdd {
		t.Fatal("v6 ethertype")
	}
	// the header was written in place: the frame starts 14 bytes before Data
	if f := batch[0].Frame(EthHdrLen); !bytes.Equal(f, want) {
		t.Fatal("header not in headroom")
	}
	sll := (*unix.RawSockaddrLinklayer)(unsafe.Pointer(&fs.names[0][0]))
	if sll.Ifindex != 7 || sll.Protocol != htons(unix.ETH_P_IP) || sll.Halen != 6 {
		t.Fatalf("sockaddr_ll %+v", sll)
	}
}

func TestDeviceGoneCounted(t *testing.T) {
	fs := &fakeSend{fail: func([]byte) error { return unix.ENXIO }}
	d := newDevice("dev", 5, 7, net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, fs.fn, nil)
	batch := pkts(ipv4(40, [4]byte{}), ipv4(40, [4]byte{}), ipv4(40, [4]byte{}))
	n, err := d.Send(batch)
	if n != 0 || !errors.Is(err, unix.ENXIO) || d.Stats().Errors != 3 {
		t.Fatalf("%d %v %+v", n, err, d.Stats())
	}
	if hint(err) == "" {
		t.Fatal("no hint for ENXIO")
	}
}

func TestFanoutKeepsOtherTargets(t *testing.T) {
	ok := &fakeSend{}
	broken := &fakeSend{fail: func([]byte) error { return unix.ENETUNREACH }}
	g1 := newGateway("good", 1, 2, ok.fn, nil)
	g2 := newGateway("bad", 3, 4, broken.fn, nil)
	f := NewFanout(g1, g2)
	var led pipeline.Ledger
	led.AddReceived(2)
	send := pipeline.Deliver(f, &led)
	batch := pkts(ipv4(40, [4]byte{10, 77, 2, 2}), ipv4(40, [4]byte{10, 77, 2, 3}))
	send(batch)
	if len(ok.got) != 2 || g1.Stats().Sent != 2 || g2.Stats().Errors != 2 {
		t.Fatalf("good %d bad %+v", len(ok.got), g2.Stats())
	}
	s := led.Snapshot()
	if s.Drops.SendError != 2 || s.Copied != 0 || !s.Balanced() {
		t.Fatalf("ledger %+v", s)
	}
	if f.Name() != "fanout(good,bad)" {
		t.Fatal(f.Name())
	}
}

func TestDeliverPerSession(t *testing.T) {
	fs := &fakeSend{}
	g := newGateway("gw", 1, 2, fs.fn, nil)
	var l0, l1 pipeline.Ledger
	batch := pkts(ipv4(40, [4]byte{}), ipv4(40, [4]byte{}), ipv4(40, [4]byte{}))
	batch[1].Session, batch[2].Session = 1, 1
	pipeline.Deliver(g, &l0, &l1)(batch)
	if l0.Snapshot().Copied != 1 || l1.Snapshot().Copied != 2 {
		t.Fatal("per-session accounting")
	}
}

func TestSinkAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race")
	}
	fs := &fakeSend{}
	fs.fn(0, nil)
	noRecord := func(fd int, hdrs []unix.Mmsghdr) (int, error) { return len(hdrs), nil }
	g := newGateway("gw", 1, 2, noRecord, nil)
	d := newDevice("dev", 5, 7, net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, noRecord, nil)
	batch := pkts(ipv4(100, [4]byte{}), ipv6(100), ipv4(1400, [4]byte{}))
	g.Send(batch)
	d.Send(batch)
	if a := testing.AllocsPerRun(200, func() { g.Send(batch); d.Send(batch) }); a > 0 {
		t.Errorf("Send allocates %.1f per batch", a)
	}
}
