package sink

import (
	"bytes"
	"encoding/binary"
	"github.com/nfclone/nfclone/internal/netnstest"
	"github.com/nfclone/nfclone/packet"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// gsoLab: namespaces a and b joined by va–vb (10.77.9.0/24, fd77:9::/64)
// with every transmit offload of va off, as on the bench's collector link:
// the kernel cuts UDP GSO packets in software before va, and computes
// their checksums, so vb receives wire datagrams. A UDP socket in b on
// port 4789 of both addresses receives them (the kernel drops datagrams
// with bad checksums, counted in InCsumErrors).
func gsoLab(t testing.TB) (a, b *netnstest.NS, rx [2]int) { return gsoLabOffloads(t, false) }

// gsoLabOffloads is gsoLab, with va's offloads left on when on is true: the
// veth then passes GSO packets to vb whole, and b's stack cuts them.
func gsoLabOffloads(t testing.TB, on bool) (a, b *netnstest.NS, rx [2]int) {
	netnstest.RequireRoot(t, "network namespaces, UDP GSO on a veth")
	a, b = netnstest.New(t, "gsoa"), netnstest.New(t, "gsob")
	a.Sh(t, "ip link add va type veth peer name vb netns "+b.Name)
	a.Sh(t, "ip addr add 10.77.9.1/24 dev va")
	a.Sh(t, "ip addr add fd77:9::1/64 dev va nodad")
	b.Sh(t, "ip addr add 10.77.9.2/24 dev vb")
	b.Sh(t, "ip addr add fd77:9::2/64 dev vb nodad")
	if !on {
		a.Sh(t, "ethtool -K va tso off gso off tx off")
	}
	b.Sh(t, "ethtool -K vb gro off")
	a.Sh(t, "ip link set va up")
	b.Sh(t, "ip link set vb up")
	// Both addresses answer (IPv6 takes a moment after the link comes up)
	// and the neighbours are known before the first burst.
	for _, dst := range []string{"10.77.9.2", "fd77:9::2"} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := exec.Command("ip", "netns", "exec", a.Name, "ping", "-c1", "-W1", dst).CombinedOutput(); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not answer pings from a", dst)
			}
		}
	}
	rx = [2]int{-1, -1}
	b.Run(func() {
		for fam, sa := range []unix.Sockaddr{
			&unix.SockaddrInet4{Port: VXLANPort, Addr: [4]byte{10, 77, 9, 2}},
			&unix.SockaddrInet6{Port: VXLANPort, Addr: netip.MustParseAddr("fd77:9::2").As16()},
		} {
			af := unix.AF_INET
			if fam == 1 {
				af = unix.AF_INET6
			}
			fd, err := unix.Socket(af, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Error(err)
				return
			}
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
			tv := unix.Timeval{Usec: 300000}
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			if err := unix.Bind(fd, sa); err != nil {
				t.Error(err)
				unix.Close(fd)
				return
			}
			rx[fam] = fd
		}
	})
	t.Cleanup(func() {
		for _, fd := range rx {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	})
	if rx[0] < 0 || rx[1] < 0 {
		t.FailNow()
	}
	return a, b, rx
}

// recvAll reads datagrams from fd until none comes for 300 ms.
func recvAll(fd int) [][]byte {
	var out [][]byte
	buf := make([]byte, 70000)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return out
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
}

// TestRootTunnelGSO: copies cut by Wire leave the sink with UDP GSO and
// reach a UDP socket behind a veth as the same datagrams, in the same
// order, as without GSO, every one no larger than the MTU and with a good
// checksum; IPv4 and IPv6 remotes; the veth's offloads off (the sender's
// kernel cuts the GSO packets) and on (the receiver's does).
func TestRootTunnelGSO(t *testing.T) {
	for _, on := range []bool{false, true} {
		name := "offloads off"
		if on {
			// GSO packets cross the veth whole; b's UDP stack cuts them
			// for the socket, which sees the same datagrams.
			name = "offloads on"
		}
		t.Run(name, func(t *testing.T) { testRootTunnelGSO(t, on) })
	}
}

func testRootTunnelGSO(t *testing.T, offloads bool) {
	a, b, rx := gsoLabOffloads(t, offloads)
	for fam, remote := range []string{"10.77.9.2:4789", "[fd77:9::2]:4789"} {
		var got [2][][]byte
		for i, gso := range []bool{false, true} {
			var tu *Tunnel
			var err error
			a.Run(func() {
				tu, err = NewTunnel(TunnelConfig{Remotes: []netip.AddrPort{netip.MustParseAddrPort(remote)},
					SourcePorts: 1, NoMark: true, NoGSO: !gso})
			})
			if err != nil {
				t.Fatal(err)
			}
			if tu.gso.Load() != gso {
				t.Fatalf("%s: GSO %v, want %v (kernel without UDP_SEGMENT?)", remote, tu.gso.Load(), gso)
			}
			batch := gsoBatch(t)
			w := NewWire(tu, 1500-20*(fam+1)-8-tunnelFrameHdr)
			if n, err := w.Send(batch); n != len(batch) || err != nil {
				t.Fatalf("%s gso %v: sent %d of %d: %v", remote, gso, n, len(batch), err)
			}
			if tu.gso.Load() != gso {
				t.Fatalf("%s: the kernel refused GSO", remote)
			}
			got[i] = recvAll(rx[fam])
			for _, p := range batch {
				p.Release()
			}
			tu.Close()
		}
		each, gso := got[0], got[1]
		if len(each) < 100 || len(gso) != len(each) {
			t.Fatalf("%s: %d datagrams with GSO, %d without", remote, len(gso), len(each))
		}
		for i := range each {
			if !bytes.Equal(each[i], gso[i]) {
				t.Fatalf("%s: datagram %d differs", remote, i)
			}
			if max := 1500 - 20*(fam+1) - 8; len(gso[i]) > max {
				t.Fatalf("%s: datagram %d of %d bytes, more than %d", remote, i, len(gso[i]), max)
			}
		}
	}
	// The kernel found no bad checksum.
	snmp := b.Sh(t, "cat /proc/net/snmp /proc/net/snmp6")
	if v := snmpField(snmp, "Udp:", "InCsumErrors"); v != "0" {
		t.Fatalf("Udp InCsumErrors %s", v)
	}
	if v := snmpField(snmp, "Udp6InCsumErrors", ""); v != "0" {
		t.Fatalf("Udp6InCsumErrors %s", v)
	}
}

// snmpField reads a counter of /proc/net/snmp (header line and value line
// starting with prefix; field names the column) or of /proc/net/snmp6
// (field empty: prefix is the counter's name).
func snmpField(s, prefix, field string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != prefix {
			continue
		}
		if field == "" {
			if len(f) == 2 {
				return f[1]
			}
			continue
		}
		if i+1 < len(lines) {
			v := strings.Fields(lines[i+1])
			for j := range f {
				if f[j] == field && j < len(v) {
					return v[j]
				}
			}
		}
		return ""
	}
	return ""
}

// BenchmarkRootTunnelVeth: TCP super-packets cut by Wire into VXLAN copies
// sent over a veth whose transmit offloads are off, to a UDP socket that is
// drained between rounds. One op = one 64 KiB super-packet; the time is the
// sending thread's, kernel included.
func BenchmarkRootTunnelVeth(b *testing.B) {
	for _, gso := range []bool{false, true} {
		name := "each"
		if gso {
			name = "gso"
		}
		b.Run(name, func(b *testing.B) {
			a, _, rx := gsoLab(b)
			var tu *Tunnel
			var err error
			a.Run(func() {
				tu, err = NewTunnel(TunnelConfig{Remotes: []netip.AddrPort{netip.MustParseAddrPort("10.77.9.2:4789")},
					NoMark: true, NoGSO: !gso})
			})
			if err != nil {
				b.Fatal(err)
			}
			defer tu.Close()
			w := NewWire(tu, 1450)
			batch := make([]*packet.Packet, 4)
			for i := range batch {
				sp := tcpSuper(b, 65000)
				binary.BigEndian.PutUint16(sp[20:22], uint16(40000+i))
				batch[i] = packet.New(sp)
			}
			drain := make([]byte, 2048)
			b.SetBytes(65000)
			b.ResetTimer()
			for i := 0; i < b.N; i += len(batch) {
				w.Send(batch)
				b.StopTimer()
				for {
					if _, _, err := unix.Recvfrom(rx[0], drain, unix.MSG_DONTWAIT); err != nil {
						break
					}
				}
				b.StartTimer()
			}
			b.StopTimer()
			if tu.gso.Load() != gso {
				b.Fatal("the kernel refused GSO")
			}
			if s := tu.Stats(); s.Errors != 0 {
				b.Fatalf("stats %+v", s)
			}
		})
	}
}

// TestRootTunnelGSOFallback: copies cut for a larger MTU than the path's
// (1500-byte inner packets in 1550-byte datagrams on a 1500-byte link):
// the kernel refuses the GSO message (EINVAL), the sink sends the copies
// one datagram each, which the kernel fragments, as without GSO, and stays
// so.
func TestRootTunnelGSOFallback(t *testing.T) {
	a, _, rx := gsoLab(t)
	var got [2][][]byte
	for i, gso := range []bool{false, true} {
		var tu *Tunnel
		var err error
		a.Run(func() {
			tu, err = NewTunnel(TunnelConfig{Remotes: []netip.AddrPort{netip.MustParseAddrPort("10.77.9.2:4789")},
				SourcePorts: 1, NoMark: true, NoGSO: !gso})
		})
		if err != nil {
			t.Fatal(err)
		}
		batch := gsoBatch(t)
		w := NewWire(tu, 1500)
		if n, err := w.Send(batch); n != len(batch) || err != nil {
			t.Fatalf("gso %v: sent %d of %d: %v", gso, n, len(batch), err)
		}
		if tu.gso.Load() {
			t.Fatal("GSO still on after the kernel refused it")
		}
		if s := tu.Stats(); s.Errors != 0 {
			t.Fatalf("gso %v: stats %+v", gso, s)
		}
		got[i] = recvAll(rx[0])
		for _, p := range batch {
			p.Release()
		}
		tu.Close()
	}
	if len(got[0]) < 100 || len(got[1]) != len(got[0]) {
		t.Fatalf("%d datagrams after the fallback, %d without GSO", len(got[1]), len(got[0]))
	}
	for i := range got[0] {
		if !bytes.Equal(got[0][i], got[1][i]) {
			t.Fatalf("datagram %d differs", i)
		}
	}
}
