package gso

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/gopacket/gopacket/ip4defrag"
	"github.com/gopacket/gopacket/ip6defrag"
	"github.com/gopacket/gopacket/layers"
)

var (
	hbh     = layers.IPProtocolIPv6HopByHop
	routing = layers.IPProtocolIPv6Routing
	dstOpts = layers.IPProtocolIPv6Destination
)

func TestSplitTCP(t *testing.T) {
	for _, tc := range []struct {
		name  string
		s     spec
		mtu   int
		flags Flags
	}{
		{"v4", spec{proto: layers.IPProtocolTCP, payload: 10000, flags: "AP"}, 1500, GSO | Known},
		{"v4 timestamps FIN CWR", spec{proto: layers.IPProtocolTCP, payload: 65535 - 20 - 32, tsOpt: true, flags: "FPACE"}, 1500, GSO | Known},
		{"v4 options DF no flags (NFLOG)", spec{proto: layers.IPProtocolTCP, payload: 4001, ipOpts: true, df: true, tsOpt: true, flags: "A"}, 1280, 0},
		{"v4 partial", spec{proto: layers.IPProtocolTCP, payload: 3000, tsOpt: true, flags: "AP"}, 1500, GSO | CsumPartial | Known},
		{"v4 mtu 576", spec{proto: layers.IPProtocolTCP, payload: 9000, flags: "AP"}, 576, GSO | Known},
		{"v4 one byte over", spec{proto: layers.IPProtocolTCP, payload: 1461, flags: "AP"}, 1500, GSO | Known},
		{"v6", spec{v6: true, proto: layers.IPProtocolTCP, payload: 65535 - 20 - 32, tsOpt: true, flags: "AP"}, 1500, GSO | Known},
		{"v6 ext headers", spec{v6: true, proto: layers.IPProtocolTCP, payload: 20000, tsOpt: true, flags: "FAPC", ext: []layers.IPProtocol{hbh, dstOpts, routing, dstOpts}}, 1400, GSO | CsumPartial | Known},
		{"v6 jumbo mtu", spec{v6: true, proto: layers.IPProtocolTCP, payload: 60000, tsOpt: true, flags: "A"}, 9000, GSO | Known},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := build(t, tc.s)
			orig := append([]byte(nil), pkt...)
			if tc.flags&CsumPartial != 0 {
				makePartial(t, pkt)
			}
			op := decode(t, orig)
			otcp := op.Layer(layers.LayerTypeTCP).(*layers.TCP)
			hdrLen := len(pkt) - len(otcp.Payload)
			out := outBufs(MaxSegments(tc.mtu), tc.mtu)
			n, err := Split(pkt, tc.mtu, tc.flags, 0, out)
			if err != nil {
				t.Fatalf("Split: %v", err)
			}
			mss := tc.mtu - hdrLen
			if want := (len(otcp.Payload) + mss - 1) / mss; n != want {
				t.Fatalf("%d segments, want %d (payload %d, mss %d)", n, want, len(otcp.Payload), mss)
			}
			var payload []byte
			for i, seg := range out[:n] {
				if len(seg) > tc.mtu {
					t.Fatalf("segment %d: %d bytes > mtu %d", i, len(seg), tc.mtu)
				}
				if i < n-1 && len(seg) != tc.mtu {
					t.Errorf("segment %d: %d bytes, only the last may be short of the mtu %d", i, len(seg), tc.mtu)
				}
				checkIP(t, seg)
				tcp := checkL4(t, seg).(*layers.TCP)
				if want := otcp.Seq + uint32(len(payload)); tcp.Seq != want {
					t.Errorf("segment %d: seq %d, want %d", i, tcp.Seq, want)
				}
				last := i == n-1
				if tcp.FIN != (otcp.FIN && last) || tcp.PSH != (otcp.PSH && last) || tcp.CWR != (otcp.CWR && i == 0) {
					t.Errorf("segment %d of %d: FIN %v PSH %v CWR %v (original %v %v %v)", i, n, tcp.FIN, tcp.PSH, tcp.CWR, otcp.FIN, otcp.PSH, otcp.CWR)
				}
				if tcp.ACK != otcp.ACK || tcp.ECE != otcp.ECE || tcp.Ack != otcp.Ack || tcp.Window != otcp.Window {
					t.Errorf("segment %d: ACK/ECE/ack/window changed", i)
				}
				if len(tcp.Contents) != len(otcp.Contents) {
					t.Errorf("segment %d: TCP header %d bytes, original %d", i, len(tcp.Contents), len(otcp.Contents))
				}
				if !bytes.Equal(tcp.Contents[20:], otcp.Contents[20:]) {
					t.Errorf("segment %d: TCP options % x, original % x", i, tcp.Contents[20:], otcp.Contents[20:])
				}
				if ip, ok := decode(t, seg).Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
					oip := op.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
					if want := oip.Id + uint16(i); ip.Id != want {
						t.Errorf("segment %d: IP ID %#x, want %#x", i, ip.Id, want)
					}
					if ip.Flags != oip.Flags || !bytes.Equal(seg[20:ip.IHL*4], orig[20:oip.IHL*4]) {
						t.Errorf("segment %d: IP flags or options changed: %v % x, original %v % x", i, ip.Flags, seg[20:ip.IHL*4], oip.Flags, orig[20:oip.IHL*4])
					}
				}
				payload = append(payload, tcp.Payload...)
			}
			if !bytes.Equal(payload, otcp.Payload) {
				t.Fatalf("segments carry %d bytes that differ from the original %d", len(payload), len(otcp.Payload))
			}
		})
	}
}

// makePartial replaces the L4 checksum of the valid packet pkt by the
// partial form the kernel leaves with CHECKSUM_PARTIAL (the folded
// pseudo-header sum, not inverted), computed with refSum.
func makePartial(t testing.TB, pkt []byte) {
	t.Helper()
	p := decode(t, pkt)
	srcIP, dstIP := pseudoAddrs(p)
	var off int
	var proto uint8
	if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		off, proto = len(pkt)-len(tcp.Payload)-len(tcp.Contents)+16, 6
	} else if udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		off, proto = len(pkt)-len(udp.Payload)-8+6, 17
	} else {
		t.Fatal("no TCP or UDP")
	}
	l4Len := len(pkt) - (off - 16)
	if proto == 17 {
		l4Len = len(pkt) - (off - 6)
	}
	partial := refSum(nil, refPseudo(srcIP, dstIP, proto, l4Len))
	binary.BigEndian.PutUint16(pkt[off:], partial)
}

func TestSplitUDPGSO(t *testing.T) {
	for _, tc := range []struct {
		name  string
		s     spec
		mtu   int
		flags Flags
	}{
		{"v4", spec{proto: layers.IPProtocolUDP, payload: 1200 * 40}, 1500, GSO | Known},
		{"v4 partial", spec{proto: layers.IPProtocolUDP, payload: 30001}, 1500, GSO | CsumPartial | Known},
		{"v4 no checksum", spec{proto: layers.IPProtocolUDP, payload: 5000, noUDPSum: true}, 1500, GSO | Known},
		{"v6", spec{v6: true, proto: layers.IPProtocolUDP, payload: 60000}, 1280, GSO | Known},
		{"v6 ext partial", spec{v6: true, proto: layers.IPProtocolUDP, payload: 20000, ext: []layers.IPProtocol{hbh, routing}}, 1500, GSO | CsumPartial | Known},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := build(t, tc.s)
			orig := append([]byte(nil), pkt...)
			if tc.flags&CsumPartial != 0 {
				makePartial(t, pkt)
			}
			oudp := decode(t, orig).Layer(layers.LayerTypeUDP).(*layers.UDP)
			hdrLen := len(pkt) - len(oudp.Payload)
			out := outBufs(MaxSegments(tc.mtu), tc.mtu)
			n, err := Split(pkt, tc.mtu, tc.flags, 0, out)
			if err != nil {
				t.Fatalf("Split: %v", err)
			}
			size := tc.mtu - hdrLen
			if want := (len(oudp.Payload) + size - 1) / size; n != want {
				t.Fatalf("%d datagrams, want %d", n, want)
			}
			var payload []byte
			for i, seg := range out[:n] {
				if len(seg) > tc.mtu {
					t.Fatalf("datagram %d: %d bytes > mtu %d", i, len(seg), tc.mtu)
				}
				checkIP(t, seg)
				udp := checkL4(t, seg).(*layers.UDP)
				if tc.s.noUDPSum && udp.Checksum != 0 {
					t.Errorf("datagram %d: checksum %#04x, the original had none (0)", i, udp.Checksum)
				}
				if i < n-1 && len(udp.Payload) != size {
					t.Errorf("datagram %d: %d bytes of payload, want %d", i, len(udp.Payload), size)
				}
				payload = append(payload, udp.Payload...)
			}
			if !bytes.Equal(payload, oudp.Payload) {
				t.Fatalf("datagrams carry %d bytes that differ from the original %d", len(payload), len(oudp.Payload))
			}
		})
	}
}

func TestSplitFragment(t *testing.T) {
	for _, tc := range []struct {
		name   string
		s      spec
		mtu    int
		flags  Flags
		partly bool // make the L4 checksum partial first
	}{
		{"v4 UDP", spec{proto: layers.IPProtocolUDP, payload: 8000}, 1500, Known, false},
		{"v4 UDP partial, odd mtu", spec{proto: layers.IPProtocolUDP, payload: 8001}, 1499, CsumPartial | Known, true},
		{"v4 UDP partial detected (NFLOG)", spec{proto: layers.IPProtocolUDP, payload: 3333}, 1500, 0, true},
		{"v4 ICMP", spec{proto: layers.IPProtocolICMPv4, payload: 4000}, 1500, Known, false},
		{"v4 options", spec{proto: layers.IPProtocolUDP, payload: 5000, ipOpts: true}, 1000, Known, false},
		{"v4 big", spec{proto: layers.IPProtocolUDP, payload: 65535 - 28}, 576, Known, false},
		{"v6 UDP", spec{v6: true, proto: layers.IPProtocolUDP, payload: 8000}, 1280, Known, false},
		{"v6 UDP partial", spec{v6: true, proto: layers.IPProtocolUDP, payload: 8000}, 1500, CsumPartial | Known, true},
		{"v6 ICMP ext headers", spec{v6: true, proto: layers.IPProtocolICMPv6, payload: 4000, ext: []layers.IPProtocol{hbh, dstOpts, routing, dstOpts}}, 1500, Known, false},
		{"v6 hop-by-hop", spec{v6: true, proto: layers.IPProtocolUDP, payload: 3000, ext: []layers.IPProtocol{hbh}}, 1280, Known, false},
		{"v6 destination options only", spec{v6: true, proto: layers.IPProtocolUDP, payload: 3000, ext: []layers.IPProtocol{dstOpts}}, 1280, Known, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := build(t, tc.s)
			want := append([]byte(nil), pkt...) // the datagram with a complete checksum
			if tc.partly {
				makePartial(t, pkt)
			}
			out := outBufs(MaxSegments(tc.mtu), tc.mtu)
			const id = 0xdeadbeef
			n, err := Split(pkt, tc.mtu, tc.flags, id, out)
			if err != nil {
				t.Fatalf("Split: %v", err)
			}
			if n < 2 {
				t.Fatalf("%d fragments of a %d-byte packet for mtu %d", n, len(pkt), tc.mtu)
			}
			for i, seg := range out[:n] {
				if len(seg) > tc.mtu {
					t.Fatalf("fragment %d: %d bytes > mtu %d", i, len(seg), tc.mtu)
				}
				checkIP(t, seg)
				p := decode(t, seg)
				if fh, ok := p.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment); ok && fh.Identification != id {
					t.Errorf("fragment %d: identification %#x, want %#x", i, fh.Identification, id)
				}
				if tc.s.ipOpts && i > 0 {
					// The loose source route (copied), padded; not the timestamp.
					if opts, want := seg[20:int(seg[0]&0xf)*4], []byte{0x83, 7, 4, 203, 0, 113, 9, 0}; !bytes.Equal(opts, want) {
						t.Errorf("fragment %d: options % x, want only the copied one, % x", i, opts, want)
					}
				}
			}
			got := reassemble(t, out[:n])
			if !bytes.Equal(got, want) {
				t.Fatalf("reassembled datagram differs from the original:\n got % x\nwant % x", got[:min(len(got), 96)], want[:min(len(want), 96)])
			}
			checkL4OrSkip(t, got)
			checkGopacketDefrag(t, out[:n], want)
		})
	}
}

// checkL4OrSkip verifies the transport checksum of a reassembled datagram
// when it is TCP or UDP.
func checkL4OrSkip(t *testing.T, pkt []byte) {
	p := decode(t, pkt)
	if p.Layer(layers.LayerTypeTCP) != nil || p.Layer(layers.LayerTypeUDP) != nil {
		checkL4(t, pkt)
	}
}

// checkGopacketDefrag reassembles frags with gopacket's defragmenters and
// compares the payload with want's.
func checkGopacketDefrag(t *testing.T, frags [][]byte, want []byte) {
	t.Helper()
	var got []byte
	if want[0]>>4 == 4 {
		d := ip4defrag.NewIPv4Defragmenter()
		for _, f := range frags {
			ip := decode(t, f).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			r, err := d.DefragIPv4(ip)
			if err != nil {
				t.Fatalf("ip4defrag: %v", err)
			}
			if r != nil {
				got = r.Payload
			}
		}
		if ihl := int(want[0]&0xf) * 4; !bytes.Equal(got, want[ihl:]) {
			t.Fatalf("ip4defrag reassembled %d bytes, want the original %d", len(got), len(want)-ihl)
		}
		return
	}
	d := ip6defrag.NewIPv6Defragmenter()
	for _, f := range frags {
		p := decode(t, f)
		r := d.DefragIPv6(p.Layer(layers.LayerTypeIPv6).(*layers.IPv6), p.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment))
		if r != nil {
			got = r.Payload
		}
	}
	fh, _ := walkExt6(frags[0])
	if unfrag := fh; !bytes.Equal(got, want[unfrag:]) {
		t.Fatalf("ip6defrag reassembled %d bytes, want the original's %d after the unfragmentable part", len(got), len(want)-unfrag)
	}
}

// TestSplitRefragment: a fragment larger than the MTU is cut again, keeping
// its offset, MF and identification.
func TestSplitRefragment(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprint("v6=", v6), func(t *testing.T) {
			pkt := build(t, spec{v6: v6, proto: layers.IPProtocolUDP, payload: 12000})
			// First cut at 9000, then each fragment at 1280.
			big := outBufs(MaxSegments(9000), 9000)
			n, err := Split(append([]byte(nil), pkt...), 9000, Known, 7, big)
			if err != nil || n != 2 {
				t.Fatalf("Split at 9000: %d, %v", n, err)
			}
			var all [][]byte
			for _, f := range big[:n] {
				small := outBufs(MaxSegments(1280), 1280)
				m, err := Split(f, 1280, GSO|Known, 99, small) // GSO must not matter for a fragment
				if err != nil {
					t.Fatalf("Split of a fragment: %v", err)
				}
				if m == 0 {
					small[0] = append(small[0], f...)
					m = 1
				}
				for _, s := range small[:m] {
					checkIP(t, s)
					if len(s) > 1280 {
						t.Fatalf("fragment of %d bytes > 1280", len(s))
					}
				}
				all = append(all, small[:m]...)
			}
			if got := reassemble(t, all); !bytes.Equal(got, pkt) {
				t.Fatalf("refragmented datagram does not reassemble to the original")
			}
			if v6 {
				for _, f := range all {
					if fh, _ := walkExt6(f); binary.BigEndian.Uint32(f[fh+4:]) != 7 {
						t.Fatalf("refragmenting changed the identification to %d", binary.BigEndian.Uint32(f[fh+4:]))
					}
				}
			}
		})
	}
}

func TestSplitErrors(t *testing.T) {
	tcp4 := func() []byte { return build(t, spec{proto: layers.IPProtocolTCP, payload: 5000, flags: "A"}) }
	for _, tc := range []struct {
		name  string
		pkt   func() []byte
		mtu   int
		flags Flags
		nOut  int
		want  error
	}{
		{"DF", func() []byte { return build(t, spec{proto: layers.IPProtocolUDP, payload: 5000, df: true}) }, 1500, Known, 10, ErrDontFragment},
		{"DF UDP GSO is segmented", func() []byte { return build(t, spec{proto: layers.IPProtocolUDP, payload: 5000, df: true}) }, 1500, GSO | Known, 10, nil},
		{"too many", tcp4, 1500, Known, 3, ErrTooMany},
		{"mtu too small", tcp4, 40 + 7, Known, 1000, ErrMTU},
		{"mtu smallest", tcp4, 40 + 8, Known, 1000, nil},
		{"truncated", func() []byte { return tcp4()[:3000] }, 1500, Known, 10, ErrTruncated},
		{"bad version", func() []byte { p := tcp4(); p[0] = 0x55; return p }, 1500, Known, 10, ErrMalformed},
		{"bad ihl", func() []byte { p := tcp4(); p[0] = 0x44; return p }, 1500, Known, 10, ErrMalformed},
		{"bad data offset", func() []byte { p := tcp4(); p[20+12] = 0x40; return p }, 1500, Known, 10, ErrMalformed},
		{"bad IPv4 option", func() []byte {
			p := build(t, spec{proto: layers.IPProtocolUDP, payload: 5000, ipOpts: true})
			p[21] = 40
			return p
		}, 1500, Known, 10, ErrMalformed},
		{"IPv6 extension header past the end", func() []byte {
			p := build(t, spec{v6: true, proto: layers.IPProtocolUDP, payload: 5000, ext: []layers.IPProtocol{hbh}})
			binary.BigEndian.PutUint16(p[4:6], 4)
			return p
		}, 40, Known, 10, ErrMalformed},
		{"short buffers", tcp4, 1500, Known, -1, ErrShortBuffer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := outBufs(max(tc.nOut, 0), tc.mtu)
			if tc.nOut < 0 {
				out = outBufs(10, tc.mtu-1)
			}
			n, err := Split(tc.pkt(), tc.mtu, tc.flags, 0, out)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Split = %d, %v; want error %v", n, err, tc.want)
			}
			if err != nil && n != 0 {
				t.Fatalf("Split returned %d packets with the error %v", n, err)
			}
			if err == nil {
				for i, seg := range out[:n] {
					if len(seg) > tc.mtu {
						t.Fatalf("packet %d: %d bytes > mtu %d", i, len(seg), tc.mtu)
					}
					checkIP(t, seg)
				}
			}
		})
	}
}

func TestSplitSmall(t *testing.T) {
	pkt := build(t, spec{proto: layers.IPProtocolTCP, payload: 100, flags: "A"})
	if n, err := Split(pkt, 1500, GSO|Known, 0, nil); n != 0 || err != nil {
		t.Fatalf("Split of a packet within the mtu = %d, %v; want 0, nil", n, err)
	}
	// Bytes after the IP length make the buffer larger than the mtu:
	// the packet is written out without them.
	padded := append(append([]byte(nil), pkt...), make([]byte, 1500)...)
	out := outBufs(1, 1500)
	n, err := Split(padded, 1500, Known, 0, out)
	if err != nil || n != 1 || !bytes.Equal(out[0], pkt) {
		t.Fatalf("Split of a padded packet = %d, %v; want the packet without padding", n, err)
	}
}

// TestMaxSegments: out of MaxSegments(mtu) buffers is enough for the
// largest packets of each kind with headers within MaxHeaders.
func TestMaxSegments(t *testing.T) {
	ext := []layers.IPProtocol{hbh, dstOpts, routing, dstOpts}
	specs := []spec{
		{proto: layers.IPProtocolTCP, payload: 65535 - 60 - 32, ipOpts: true, tsOpt: true, flags: "A"},
		{proto: layers.IPProtocolUDP, payload: 65535 - 36 - 8, ipOpts: true},
		{v6: true, proto: layers.IPProtocolTCP, payload: 65535 - 72 - 32, tsOpt: true, flags: "A", ext: ext},
		{v6: true, proto: layers.IPProtocolUDP, payload: 65535 - 72 - 8, ext: ext},
	}
	for _, mtu := range []int{300, 576, 1280, 1500, 9000} {
		for _, s := range specs {
			for _, f := range []Flags{Known, GSO | Known} {
				pkt := build(t, s)
				out := outBufs(MaxSegments(mtu), mtu)
				n, err := Split(pkt, mtu, f, 0, out)
				if err != nil || n < 2 {
					t.Errorf("mtu %d, %d-byte packet %+v, flags %03b: MaxSegments %d: Split = %d, %v", mtu, len(pkt), s, f, MaxSegments(mtu), n, err)
				}
			}
		}
	}
}
