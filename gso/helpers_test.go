package gso

import (
	"encoding/binary"
	"net"
	"sort"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Test packets are built with gopacket and checked twice: with refSum, a
// plain 16-bit word loop independent of Sum, and with gopacket.

var (
	src4 = net.IP{192, 0, 2, 1}
	dst4 = net.IP{198, 51, 100, 7}
	src6 = net.ParseIP("2001:db8::1")
	dst6 = net.ParseIP("2001:db8:1::2")
	via6 = net.ParseIP("2001:db8:2::3") // a routing header's waypoint
)

// refSum is the folded one's complement sum of b, 16 bits at a time.
func refSum(b []byte, initial uint32) uint16 {
	s := initial
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
		s = s&0xffff + s>>16
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// refPseudo is the pseudo-header of a transport header in an IP packet
// with the given addresses, summed by refSum.
func refPseudo(src, dst net.IP, proto uint8, length int) uint32 {
	var b []byte
	if s4 := src.To4(); s4 != nil {
		b = append(append(b, s4...), dst.To4()...)
		b = append(b, 0, proto, byte(length>>8), byte(length))
	} else {
		b = append(append(b, src.To16()...), dst.To16()...)
		b = append(b, byte(length>>24), byte(length>>16), byte(length>>8), byte(length), 0, 0, 0, proto)
	}
	return uint32(refSum(b, 0))
}

// spec describes a test packet.
type spec struct {
	v6       bool
	proto    layers.IPProtocol // TCP, UDP or ICMPv4/ICMPv6
	payload  int               // transport payload bytes
	ipOpts   bool              // IPv4: a copied (LSRR-like) and a non-copied (timestamp-like) option
	df       bool              // IPv4 DF
	tsOpt    bool              // TCP timestamps option
	flags    string            // TCP flags: letters of "FSRPAUEC"
	ext      []layers.IPProtocol
	noUDPSum bool // IPv4 UDP without checksum
}

// build serializes s with valid lengths and checksums.
func build(t testing.TB, s spec) []byte {
	t.Helper()
	payload := make([]byte, s.payload)
	for i := range payload {
		payload[i] = byte(i*7 + i>>8)
	}
	var ls []gopacket.SerializableLayer
	var netl gopacket.NetworkLayer
	first := s.proto
	if len(s.ext) > 0 {
		first = s.ext[0]
	}
	if s.v6 {
		ip := &layers.IPv6{Version: 6, TrafficClass: 0x20, FlowLabel: 0x12345, NextHeader: first, HopLimit: 64, SrcIP: src6, DstIP: dst6}
		netl = ip
		ls = append(ls, ip)
		for i, e := range s.ext {
			next := s.proto
			if i+1 < len(s.ext) {
				next = s.ext[i+1]
			}
			ls = append(ls, extHeader(t, e, next))
			if e == layers.IPProtocolIPv6Routing {
				ip.DstIP = via6
			}
		}
	} else {
		ip := &layers.IPv4{Version: 4, TOS: 0x10, Id: 0xfffe, TTL: 64, Protocol: s.proto, SrcIP: src4, DstIP: dst4}
		if s.df {
			ip.Flags = layers.IPv4DontFragment
		}
		if s.ipOpts {
			ip.Options = []layers.IPv4Option{
				{OptionType: 0x83, OptionLength: 7, OptionData: []byte{4, 203, 0, 113, 9}}, // loose source route: copied
				{OptionType: 1},
				{OptionType: 0x44, OptionLength: 8, OptionData: []byte{5, 0, 0, 0, 0, 0}}, // timestamp: not copied
			}
		}
		netl = ip
		ls = append(ls, ip)
	}
	switch s.proto {
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 0xfffff000, Ack: 77, Window: 512}
		for _, c := range s.flags {
			switch c {
			case 'F':
				tcp.FIN = true
			case 'S':
				tcp.SYN = true
			case 'R':
				tcp.RST = true
			case 'P':
				tcp.PSH = true
			case 'A':
				tcp.ACK = true
			case 'U':
				tcp.URG = true
			case 'E':
				tcp.ECE = true
			case 'C':
				tcp.CWR = true
			}
		}
		if s.tsOpt {
			tcp.Options = []layers.TCPOption{
				{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0, 0, 1, 0, 0, 0, 2, 0}},
			}
		}
		if err := tcp.SetNetworkLayerForChecksum(netl); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, tcp)
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: 40001, DstPort: 40002}
		if err := udp.SetNetworkLayerForChecksum(netl); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, udp)
	}
	ls = append(ls, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("building %+v: %v", s, err)
	}
	b := append([]byte(nil), buf.Bytes()...)
	if s.v6 && len(s.ext) > 0 && (s.proto == layers.IPProtocolTCP || s.proto == layers.IPProtocolUDP) {
		// gopacket sums a hand-built IPv6 layer's DstIP (the waypoint of
		// a routing header): sum again with the final destination.
		hdr, off := 8, 6
		if s.proto == layers.IPProtocolTCP {
			hdr, off = 20, 16
			if s.tsOpt {
				hdr = 32
			}
		}
		start := len(b) - s.payload - hdr
		b[start+off], b[start+off+1] = 0, 0
		sum := ^refSum(b[start:], refPseudo(src6, dst6, uint8(s.proto), len(b)-start))
		if sum == 0 && s.proto == layers.IPProtocolUDP {
			sum = 0xffff
		}
		binary.BigEndian.PutUint16(b[start+off:], sum)
	}
	if s.noUDPSum && s.proto == layers.IPProtocolUDP && !s.v6 {
		l4 := int(b[0]&0xf) * 4
		b[l4+6], b[l4+7] = 0, 0
	}
	if s.proto == layers.IPProtocolTCP || s.proto == layers.IPProtocolUDP {
		checkL4(t, b) // the test's own packets must be valid
	}
	return b
}

// extHeader is an IPv6 extension header of type e followed by next.
func extHeader(t testing.TB, e, next layers.IPProtocol) gopacket.SerializableLayer {
	switch e {
	case layers.IPProtocolIPv6HopByHop:
		h := &layers.IPv6HopByHop{}
		h.NextHeader = next
		h.Options = []*layers.IPv6HopByHopOption{{OptionType: 0x1e, OptionLength: 4, OptionData: []byte{1, 2, 3, 4}}}
		return h
	case layers.IPProtocolIPv6Destination:
		h := &layers.IPv6Destination{}
		h.NextHeader = next
		h.Options = []*layers.IPv6DestinationOption{{OptionType: 0x1e, OptionLength: 12, OptionData: make([]byte, 12)}}
		return h
	case layers.IPProtocolIPv6Routing:
		// Type 2 (mobile IPv6) with one segment left: the final
		// destination is the address in the header, dst6.
		return rawExt{next: next, data: append([]byte{byte(next), 2, 2, 1, 0, 0, 0, 0}, dst6.To16()...)}
	}
	t.Fatalf("no extension header %v", e)
	return nil
}

// rawExt is an extension header given as bytes.
type rawExt struct {
	next layers.IPProtocol
	data []byte
}

func (r rawExt) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	d, err := b.PrependBytes(len(r.data))
	copy(d, r.data)
	return err
}
func (r rawExt) LayerType() gopacket.LayerType { return layers.LayerTypeIPv6Routing }

// l4Info is where the transport header of an unfragmented test packet is,
// found with gopacket, and the pseudo-header addresses.
func decode(t testing.TB, pkt []byte) gopacket.Packet {
	t.Helper()
	first := layers.LayerTypeIPv4
	if pkt[0]>>4 == 6 {
		first = layers.LayerTypeIPv6
	}
	p := gopacket.NewPacket(pkt, first, gopacket.DecodeOptions{NoCopy: true})
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket cannot decode % x: %v", pkt[:min(len(pkt), 80)], el.Error())
	}
	return p
}

// checkIP verifies seg's IP header: version, lengths equal to len(seg),
// IPv4 header checksum (refSum and gopacket), and returns the offset of
// the header after the IP headers with its protocol.
func checkIP(t testing.TB, seg []byte) (v6 bool) {
	t.Helper()
	switch seg[0] >> 4 {
	case 4:
		ihl := int(seg[0]&0xf) * 4
		if got := int(binary.BigEndian.Uint16(seg[2:4])); got != len(seg) {
			t.Fatalf("IPv4 total length %d, packet %d bytes", got, len(seg))
		}
		if s := refSum(seg[:ihl], 0); s != 0xffff {
			t.Fatalf("IPv4 header checksum invalid: header sums to %#04x", s)
		}
		ip := decode(t, seg).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		got := ip.Checksum
		cp := *ip
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &cp, gopacket.Payload(ip.Payload)); err != nil {
			t.Fatal(err)
		}
		if cp.Checksum != got {
			t.Fatalf("IPv4 header checksum %#04x, gopacket computes %#04x", got, cp.Checksum)
		}
		return false
	case 6:
		if got := 40 + int(binary.BigEndian.Uint16(seg[4:6])); got != len(seg) {
			t.Fatalf("IPv6 payload length says %d bytes, packet %d", got, len(seg))
		}
		return true
	}
	t.Fatalf("not an IP packet: % x", seg[:min(20, len(seg))])
	return false
}

// pseudoAddrs is the pseudo-header's source and destination of p: the IP
// addresses, except that the final destination of the test's routing
// header is dst6 and that of the test's IPv4 source route its last address.
func pseudoAddrs(p gopacket.Packet) (src, dst net.IP) {
	s, d := p.NetworkLayer().NetworkFlow().Endpoints()
	src, dst = s.Raw(), d.Raw()
	if p.Layer(layers.LayerTypeIPv6Routing) != nil {
		dst = dst6
	}
	if ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		for _, o := range ip.Options {
			if o.OptionType == 0x83 {
				dst = o.OptionData[len(o.OptionData)-4:]
			}
		}
	}
	return src, dst
}

// checkL4 verifies the TCP or UDP checksum of the unfragmented packet seg,
// with refSum and with gopacket serializing the decoded layer with
// ComputeChecksums, and returns the decoded layer.
func checkL4(t testing.TB, seg []byte) gopacket.Layer {
	t.Helper()
	p := decode(t, seg)
	netl := p.NetworkLayer()
	srcIP, dstIP := pseudoAddrs(p)
	if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		l4 := append(append([]byte(nil), tcp.Contents...), tcp.Payload...)
		if s := refSum(l4, refPseudo(srcIP, dstIP, 6, len(l4))); s != 0xffff {
			t.Fatalf("TCP checksum %#04x invalid: sums to %#04x", tcp.Checksum, s)
		}
		got := tcp.Checksum
		cp := *tcp
		if err := cp.SetNetworkLayerForChecksum(netl); err != nil {
			t.Fatal(err)
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &cp, gopacket.Payload(tcp.Payload)); err != nil {
			t.Fatal(err)
		}
		if cp.Checksum != got {
			t.Fatalf("TCP checksum %#04x, gopacket computes %#04x", got, cp.Checksum)
		}
		return tcp
	}
	if udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		l4 := append(append([]byte(nil), udp.Contents...), udp.Payload...)
		if int(udp.Length) != len(l4) {
			t.Fatalf("UDP length %d, datagram %d bytes", udp.Length, len(l4))
		}
		got := udp.Checksum
		if got == 0 && !srcIPv6(srcIP) {
			return udp
		}
		if s := refSum(l4, refPseudo(srcIP, dstIP, 17, len(l4))); s != 0xffff {
			t.Fatalf("UDP checksum %#04x invalid: sums to %#04x", got, s)
		}
		cp := *udp
		if err := cp.SetNetworkLayerForChecksum(netl); err != nil {
			t.Fatal(err)
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &cp, gopacket.Payload(udp.Payload)); err != nil {
			t.Fatal(err)
		}
		if cp.Checksum != got {
			t.Fatalf("UDP checksum %#04x, gopacket computes %#04x", got, cp.Checksum)
		}
		return udp
	}
	t.Fatalf("no TCP or UDP layer in %v", p)
	return nil
}

func srcIPv6(ip net.IP) bool { return ip.To4() == nil }

// walkExt6 is the test's own walk of IPv6 extension headers: the offset of
// the fragment header (or -1) and of the byte that names it.
func walkExt6(pkt []byte) (frag, namer int) {
	nh, off, namer := pkt[6], 40, 6
	for nh == 0 || nh == 43 || nh == 60 {
		namer = off
		nh = pkt[off]
		off += (int(pkt[off+1]) + 1) * 8
	}
	if nh != 44 {
		return -1, namer
	}
	return off, namer
}

// reassemble rebuilds the datagram from fragments as a receiver would: the
// first fragment's headers, the fragments' payloads by offset, lengths and
// (IPv4) header checksum, fragment fields cleared (IPv6: header removed).
func reassemble(t testing.TB, frags [][]byte) []byte {
	t.Helper()
	type piece struct {
		off  int
		more bool
		hdr  []byte
		data []byte
	}
	var ps []piece
	for _, f := range frags {
		if f[0]>>4 == 4 {
			ihl := int(f[0]&0xf) * 4
			v := binary.BigEndian.Uint16(f[6:8])
			ps = append(ps, piece{int(v&0x1fff) * 8, v&0x2000 != 0, f[:ihl], f[ihl:]})
			continue
		}
		fh, namer := walkExt6(f)
		if fh < 0 {
			t.Fatalf("IPv6 fragment without a fragment header: % x", f[:min(len(f), 64)])
		}
		v := binary.BigEndian.Uint16(f[fh+2:])
		h := append([]byte(nil), f[:fh]...)
		h[namer] = f[fh] // the fragment header's next header
		ps = append(ps, piece{int(v &^ 7), v&1 != 0, h, f[fh+8:]})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].off < ps[j].off })
	if ps[0].off != 0 {
		t.Fatalf("no first fragment")
	}
	out := append([]byte(nil), ps[0].hdr...)
	next := 0
	for i, p := range ps {
		if p.off != next {
			t.Fatalf("fragment %d at offset %d, expected %d", i, p.off, next)
		}
		if p.more != (i != len(ps)-1) {
			t.Fatalf("fragment %d of %d has MF=%v", i, len(ps), p.more)
		}
		if p.more && len(p.data)%8 != 0 {
			t.Fatalf("fragment %d carries %d bytes, not a multiple of 8", i, len(p.data))
		}
		out = append(out, p.data...)
		next += len(p.data)
	}
	if out[0]>>4 == 4 {
		binary.BigEndian.PutUint16(out[2:4], uint16(len(out)))
		binary.BigEndian.PutUint16(out[6:8], binary.BigEndian.Uint16(out[6:8])&^0x3fff)
		ihl := int(out[0]&0xf) * 4
		out[10], out[11] = 0, 0
		binary.BigEndian.PutUint16(out[10:12], ^refSum(out[:ihl], 0))
	} else {
		binary.BigEndian.PutUint16(out[4:6], uint16(len(out)-40))
	}
	return out
}

// outBufs is n buffers of capacity mtu.
func outBufs(n, mtu int) [][]byte {
	out := make([][]byte, n)
	back := make([]byte, n*mtu)
	for i := range out {
		out[i] = back[i*mtu : i*mtu : (i+1)*mtu]
	}
	return out
}
