package sink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/nfclone/nfclone/internal/netnstest"
	"github.com/nfclone/nfclone/packet"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces, raw and packet sockets")
}

type testNS = netnstest.NS

func newTestNS(t *testing.T, prefix string) *testNS { return netnstest.New(t, prefix) }

func lab(t *testing.T) (a, b *testNS) {
	a, b = newTestNS(t, "sinka"), newTestNS(t, "sinkb")
	a.Sh(t, "ip link add va type veth peer name vb netns "+b.Name)
	a.Sh(t, "ip addr add 10.77.9.1/24 dev va")
	a.Sh(t, "ip addr add fd77:9::1/64 dev va nodad")
	b.Sh(t, "ip addr add 10.77.9.2/24 dev vb")
	b.Sh(t, "ip addr add fd77:9::2/64 dev vb nodad")
	a.Sh(t, "ip link set va up")
	b.Sh(t, "ip link set vb up")
	return a, b
}

type capture struct {
	fd int
}

// openCapture opens an AF_PACKET socket on dev inside ns.
func openCapture(t *testing.T, ns *testNS, dev string) *capture {
	t.Helper()
	c := &capture{fd: -1}
	ns.Run(func() {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			t.Error(err)
			return
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			t.Error(err)
			return
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			t.Error(err)
			return
		}
		tv := unix.Timeval{Sec: 0, Usec: 200000}
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		c.fd = fd
	})
	if c.fd < 0 {
		t.FailNow()
	}
	t.Cleanup(func() { unix.Close(c.fd) })
	return c
}

// next returns the first frame for which match is true, within 3 s.
func (c *capture) next(t *testing.T, match func(f []byte) bool) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue
		}
		if match(buf[:n]) {
			return append([]byte(nil), buf[:n]...)
		}
	}
	t.Fatal("expected frame not captured")
	return nil
}

func udp4(n int, id uint16, ttl byte, marker byte) []byte {
	b := make([]byte, n)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
	binary.BigEndian.PutUint16(b[4:6], id)
	b[8], b[9] = ttl, 17
	copy(b[12:16], []byte{10, 77, 9, 1})
	copy(b[16:20], []byte{10, 77, 9, 2})
	binary.BigEndian.PutUint16(b[10:12], IPv4Checksum(b[:20]))
	binary.BigEndian.PutUint16(b[20:22], 40000)
	binary.BigEndian.PutUint16(b[22:24], 9)
	binary.BigEndian.PutUint16(b[24:26], uint16(n-20))
	for i := 28; i < n; i++ {
		b[i] = marker
	}
	return b
}

func udp6(n int, hop byte, marker byte) []byte {
	b := make([]byte, n)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(n-40))
	b[6], b[7] = 17, hop
	copy(b[8:24], net.ParseIP("fd77:9::1").To16())
	copy(b[24:40], net.ParseIP("fd77:9::2").To16())
	binary.BigEndian.PutUint16(b[40:42], 40000)
	binary.BigEndian.PutUint16(b[42:44], 9)
	binary.BigEndian.PutUint16(b[44:46], uint16(n-40))
	for i := 48; i < n; i++ {
		b[i] = marker
	}
	return b
}

func isUDPMarker(f []byte, marker byte) bool {
	if len(f) < 14+48 {
		return false
	}
	switch binary.BigEndian.Uint16(f[12:14]) {
	case unix.ETH_P_IP:
		return f[14+9] == 17 && f[len(f)-1] == marker
	case unix.ETH_P_IPV6:
		return f[14+6] == 17 && f[len(f)-1] == marker
	}
	return false
}

func TestRootGatewaySink(t *testing.T) {
	requireRoot(t)
	a, b := lab(t)
	capt := openCapture(t, b, "vb")
	var g *Gateway
	var err error
	a.Run(func() { g, err = NewGateway(GatewayConfig{Name: "gw"}) })
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()

	// IPv4 and IPv6, TTL / hop limit 1: a userspace copy is sent as is.
	p4 := udp4(100, 0x1234, 1, 0xa4)
	p6 := udp6(120, 1, 0xa6)
	batch := []*packet.Packet{packet.New(p4), packet.New(p6)}
	if n, err := g.Send(batch); n != 2 || err != nil {
		t.Fatalf("send: %d %v", n, err)
	}
	f4 := capt.next(t, func(f []byte) bool { return isUDPMarker(f, 0xa4) })
	if !bytes.Equal(f4[14:], p4) {
		t.Fatalf("IPv4 copy differs:\n got %x\nwant %x", f4[14:], p4)
	}
	f6 := capt.next(t, func(f []byte) bool { return isUDPMarker(f, 0xa6) })
	if !bytes.Equal(f6[14:], p6) {
		t.Fatalf("IPv6 copy differs:\n got %x\nwant %x", f6[14:], p6)
	}

	// A truncated copy leaves with consistent lengths.
	full := udp4(300, 0x4321, 64, 0xa5)
	tp := packet.New(full[:80])
	if !tp.Truncated() {
		t.Fatal("not truncated")
	}
	if n, err := g.Send([]*packet.Packet{tp}); n != 1 || err != nil {
		t.Fatalf("send truncated: %d %v", n, err)
	}
	ft := capt.next(t, func(f []byte) bool { return isUDPMarker(f, 0xa5) })
	ip := ft[14:]
	if len(ip) != 80 || binary.BigEndian.Uint16(ip[2:4]) != 80 || IPv4Checksum(ip[:20]) != 0 || ip[8] != 64 {
		t.Fatalf("truncated copy: len %d tot_len %d", len(ip), binary.BigEndian.Uint16(ip[2:4]))
	}

	// Unreachable target: counted, not fatal.
	un := udp4(60, 1, 64, 0)
	copy(un[16:20], []byte{10, 77, 250, 1})
	binary.BigEndian.PutUint16(un[10:12], 0)
	binary.BigEndian.PutUint16(un[10:12], IPv4Checksum(un[:20]))
	ub := []*packet.Packet{packet.New(un)}
	if n, err := g.Send(ub); n != 0 || !(errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH)) {
		t.Fatalf("unreachable: %d %v", n, err)
	}
	if st := g.Stats(); st.Errors != 1 || st.Sent != 3 || ub[0].Errs != 1 {
		t.Fatalf("stats %+v", st)
	}
	for _, p := range append(batch, tp, ub[0]) {
		p.Release()
	}
}

func TestRootDeviceSink(t *testing.T) {
	requireRoot(t)
	a, b := lab(t)
	capt := openCapture(t, b, "vb")
	var vbMAC net.HardwareAddr
	b.Run(func() {
		ifi, err := net.InterfaceByName("vb")
		if err == nil {
			vbMAC = ifi.HardwareAddr
		}
	})
	var d *Device
	var err error
	var vaMAC net.HardwareAddr
	a.Run(func() {
		d, err = NewDevice(DeviceConfig{Device: "va", DstMAC: vbMAC})
		if ifi, e := net.InterfaceByName("va"); e == nil {
			vaMAC = ifi.HardwareAddr
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	p4 := udp4(90, 7, 1, 0xd4)
	p6 := udp6(90, 1, 0xd6)
	batch := []*packet.Packet{packet.New(p4), packet.New(p6)}
	if n, err := d.Send(batch); n != 2 || err != nil {
		t.Fatalf("send: %d %v", n, err)
	}
	want4 := append(append(append([]byte(nil), vbMAC...), vaMAC...), 0x08, 0x00)
	want4 = append(want4, p4...)
	if f := capt.next(t, func(f []byte) bool { return isUDPMarker(f, 0xd4) }); !bytes.Equal(f, want4) {
		t.Fatalf("frame:\n got %x\nwant %x", f, want4)
	}
	want6 := append(append(append([]byte(nil), vbMAC...), vaMAC...), 0x86, 0xdd)
	want6 = append(want6, p6...)
	if f := capt.next(t, func(f []byte) bool { return isUDPMarker(f, 0xd6) }); !bytes.Equal(f, want6) {
		t.Fatalf("frame6:\n got %x\nwant %x", f, want6)
	}
	// The device goes away: errors are counted per target, nothing panics.
	a.Sh(t, "ip link del va")
	gone := []*packet.Packet{packet.New(p4)}
	n, err := d.Send(gone)
	if n != 0 || err == nil || d.Stats().Errors != 1 {
		t.Fatalf("device gone: %d %v %+v", n, err, d.Stats())
	}
	t.Logf("device gone: %v", err)
	for _, p := range append(batch, gone...) {
		p.Release()
	}
}
