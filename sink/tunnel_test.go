package sink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/nfclone/nfclone/packet"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestPutVXLANBytes(t *testing.T) {
	h := bytes.Repeat([]byte{0xee}, 8)
	PutVXLAN(h, 0x123456)
	want := []byte{
		0x08,             // flags: I (VNI valid)
		0x00, 0x00, 0x00, // reserved
		0x12, 0x34, 0x56, // VNI 0x123456
		0x00, // reserved
	}
	if !bytes.Equal(h, want) {
		t.Fatalf("vxlan %x want %x", h, want)
	}
}

func TestPutGENEVEBytes(t *testing.T) {
	h := bytes.Repeat([]byte{0xee}, 8)
	PutGENEVE(h, 124)
	want := []byte{
		0x00,       // version 0, option length 0
		0x00,       // O=0 C=0, reserved
		0x65, 0x58, // protocol type: transparent Ethernet bridging
		0x00, 0x00, 0x7c, // VNI 124
		0x00, // reserved
	}
	if !bytes.Equal(h, want) {
		t.Fatalf("geneve %x want %x", h, want)
	}
}

// fakeTunnel: a Tunnel with fake socket descriptors (100+i: IPv4 pool,
// 200+i: IPv6 pool).
func fakeTunnel(t testing.TB, kind string, send sendmmsgFunc, remotes ...string) *Tunnel {
	var rs []netip.AddrPort
	for _, r := range remotes {
		rs = append(rs, netip.MustParseAddrPort(r))
	}
	tu, err := newTunnel(TunnelConfig{Kind: kind, Remotes: rs, VNI: 123}, send)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		tu.fds[0] = append(tu.fds[0], 100+i)
		tu.fds[1] = append(tu.fds[1], 200+i)
	}
	return tu
}

func TestTunnelSendFrames(t *testing.T) {
	fs := &fakeSend{}
	tu := fakeTunnel(t, "vxlan", fs.fn, "10.77.4.2:4789", "[fd77:4::2]:0")
	var datas [][]byte
	for i := range 40 {
		if i%3 == 0 {
			d := ipv6(80)
			binary.BigEndian.PutUint16(d[40:42], uint16(i))
			datas = append(datas, d)
		} else {
			datas = append(datas, flowPkt4(i))
		}
	}
	batch := pkts(datas...)
	bad := packet.New([]byte{0x10, 1, 2}) // not IP
	batch = append(batch, bad)
	n, err := tu.Send(batch)
	if n != 40 || !errors.Is(err, errUnsendable) || bad.Errs != 1 {
		t.Fatalf("send %d %v", n, err)
	}
	if len(fs.got) != 40 {
		t.Fatalf("%d datagrams", len(fs.got))
	}
	if fs.calls > 8 {
		t.Fatalf("%d sendmmsg calls for 8 sockets", fs.calls)
	}
	seen := map[string]int{}
	for i, g := range fs.got {
		if !bytes.Equal(g[:8], []byte{8, 0, 0, 0, 0, 0, 123, 0}) {
			t.Fatalf("vxlan header %x", g[:8])
		}
		eth := g[8:22]
		if !bytes.Equal(eth[0:6], DefaultTunnelDstMAC) || !bytes.Equal(eth[6:12], DefaultTunnelSrcMAC) {
			t.Fatalf("inner ethernet %x", eth)
		}
		inner := g[22:]
		et := binary.BigEndian.Uint16(eth[12:14])
		if (inner[0]>>4 == 4) != (et == 0x0800) || (inner[0]>>4 == 6) != (et == 0x86dd) {
			t.Fatalf("ethertype %#x for version %d", et, inner[0]>>4)
		}
		found := false
		for _, d := range datas {
			if bytes.Equal(d, inner) {
				found = true
			}
		}
		if !found {
			t.Fatal("inner packet changed")
		}
		// The remote is the one PickRemote chooses; the socket is one of
		// the remote's family.
		flow := FlowHash(inner)
		want := tu.remotes[tu.hrw.Pick(flow)]
		name := fs.names[i]
		fd := fs.fds[i]
		// sockaddr bytes: family (host order), port (network order),
		// then the IPv4 address at 4 or the IPv6 address at 8.
		if binary.BigEndian.Uint16(name[2:4]) != 4789 {
			t.Fatalf("remote port in %x", name)
		}
		if want.fam == 0 {
			if len(name) != unix.SizeofSockaddrInet4 || !bytes.Equal(name[4:8], []byte{10, 77, 4, 2}) || fd < 100 || fd > 103 {
				t.Fatalf("v4 remote %x fd %d", name, fd)
			}
		} else if len(name) != unix.SizeofSockaddrInet6 || name[8] != 0xfd || fd < 200 || fd > 203 {
			t.Fatalf("v6 remote %x fd %d", name, fd)
		}
		// A flow always uses the same socket.
		key := string(inner)
		if prev, ok := seen[key]; ok && prev != fd {
			t.Fatal("one flow over two sockets")
		}
		seen[key] = fd
	}
	if st := tu.Stats(); st.Sent != 40 || st.Errors != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Send failures on one socket are counted per copy; the others go on.
	fs2 := &fakeSend{fail: func(b []byte) error {
		if b[22]>>4 == 6 {
			return unix.ENETUNREACH
		}
		return nil
	}}
	tu2 := fakeTunnel(t, "geneve", fs2.fn, "10.77.4.2:6081", "[fd77:4::2]:6081")
	batch2 := pkts(datas...)
	n, err = tu2.Send(batch2)
	v6 := 0
	for _, p := range batch2 {
		if p.Family == 6 {
			v6++
			if p.Errs != 1 {
				t.Fatal("v6 copy not counted failed")
			}
		} else if p.Errs != 0 {
			t.Fatal("v4 copy counted failed")
		}
	}
	if n != 40-v6 || !errors.Is(err, unix.ENETUNREACH) || tu2.Stats().Errors != uint64(v6) {
		t.Fatalf("partial failure: %d %v %+v", n, err, tu2.Stats())
	}
	for _, g := range fs2.got {
		if !bytes.Equal(g[:8], []byte{0, 0, 0x65, 0x58, 0, 0, 123, 0}) {
			t.Fatalf("geneve header %x", g[:8])
		}
	}
	for _, p := range append(batch, batch2...) {
		p.Release()
	}
}

func TestTunnelConfigErrors(t *testing.T) {
	r := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:4789")}
	for _, c := range []TunnelConfig{
		{Kind: "gre", Remotes: r},
		{Remotes: nil},
		{Remotes: r, VNI: 1 << 24},
		{Remotes: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:1")}},
		{Remotes: r, SrcMAC: net.HardwareAddr{1}},
	} {
		if _, err := NewTunnel(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestTunnelAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race")
	}
	tu := fakeTunnel(t, "vxlan", nopSend, "10.77.4.2:4789", "10.77.4.3:4789", "[fd77:4::2]:4789")
	batch := benchBatch(64, 100)
	tu.Send(batch)
	if a := testing.AllocsPerRun(200, func() { tu.Send(batch) }); a > 0 {
		t.Errorf("Tunnel.Send allocates %.1f per batch", a)
	}
}

// One op = one copy (batches of 64, 64 different flows; syscall faked).
func BenchmarkTunnelBuildBatch(b *testing.B) {
	tu := fakeTunnel(b, "vxlan", nopSend, "10.77.4.2:4789", "10.77.4.3:4789")
	batch := make([]*packet.Packet, 64)
	for i := range batch {
		batch[i] = packet.New(flowPkt4(i))
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i += 64 {
		tu.Send(batch)
	}
}

func TestRootTunnelSink(t *testing.T) {
	requireRoot(t)
	a, b := lab(t)
	capt := openCapture(t, b, "vb")
	var tu *Tunnel
	var err error
	a.Run(func() {
		tu, err = NewTunnel(TunnelConfig{Kind: "vxlan", VNI: 77, Remotes: []netip.AddrPort{
			netip.MustParseAddrPort("10.77.9.2:4789")}, SourcePorts: 4})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tu.Close()
	v4ports, _ := tu.SourcePorts()
	// Every socket carries the mark.
	for _, fd := range tu.fds[0] {
		if m, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK); err != nil || m != DefaultMark {
			t.Fatalf("mark %#x %v", m, err)
		}
	}
	p4 := udp4(100, 5, 64, 0xb4)
	batch := []*packet.Packet{packet.New(p4)}
	if n, err := tu.Send(batch); n != 1 || err != nil {
		t.Fatalf("send %d %v", n, err)
	}
	match := func(f []byte) bool {
		return len(f) > 14+20+8+8 && f[12] == 8 && f[13] == 0 && f[14+9] == 17 &&
			binary.BigEndian.Uint16(f[14+22:14+24]) == 4789
	}
	f := capt.next(t, match)
	udp := f[14+20:]
	sport := binary.BigEndian.Uint16(udp[0:2])
	okPort := false
	for _, p := range v4ports {
		okPort = okPort || p == sport
	}
	if !okPort {
		t.Fatalf("source port %d not in the pool %v", sport, v4ports)
	}
	payload := udp[8:]
	if !bytes.Equal(payload[:8], []byte{8, 0, 0, 0, 0, 0, 77, 0}) || !bytes.Equal(payload[22:], p4) {
		t.Fatalf("vxlan payload %x", payload)
	}
	// Nobody listens on 10.77.9.2:4789: the ICMP port unreachable must not
	// make later sends fail (unconnected sockets).
	time.Sleep(100 * time.Millisecond)
	for range 3 {
		again := []*packet.Packet{packet.New(p4)}
		if n, err := tu.Send(again); n != 1 || err != nil {
			t.Fatalf("send after ICMP error: %d %v", n, err)
		}
		again[0].Release()
	}
	// Unreachable remote: counted, not fatal.
	var tu2 *Tunnel
	a.Run(func() {
		tu2, err = NewTunnel(TunnelConfig{Kind: "geneve", Remotes: []netip.AddrPort{
			netip.MustParseAddrPort("10.77.250.1:6081")}})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tu2.Close()
	un := []*packet.Packet{packet.New(p4)}
	if n, err := tu2.Send(un); n != 0 || !(errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH)) || un[0].Errs != 1 {
		t.Fatalf("unreachable: %d %v", n, err)
	}
	batch[0].Release()
	un[0].Release()
}

// Real sendmmsg over loopback to a local UDP socket (not drained: the
// receive queue overflows and drops, which costs the sender nothing more):
// how much does the per-socket grouping cost? One op = one copy, 64
// flows per batch.
func BenchmarkTunnelLoopback(b *testing.B) {
	for _, ports := range []int{1, 8, 16} {
		b.Run("ports="+itoa(ports), func(b *testing.B) {
			rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Skip(err)
			}
			defer rc.Close()
			tu, err := NewTunnel(TunnelConfig{Remotes: []netip.AddrPort{rc.LocalAddr().(*net.UDPAddr).AddrPort()},
				SourcePorts: ports, NoMark: true})
			if err != nil {
				b.Skip(err)
			}
			defer tu.Close()
			batch := make([]*packet.Packet, 64)
			for i := range batch {
				batch[i] = packet.New(flowPkt4(i))
			}
			b.ReportAllocs()
			for i := 0; i < b.N; i += 64 {
				tu.Send(batch)
			}
		})
	}
}

func itoa(n int) string { return string(rune('0'+n/10%10)) + string(rune('0'+n%10)) }
