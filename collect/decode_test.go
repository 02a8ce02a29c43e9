package collect

import (
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/nfclone/nfclone/pcapfile"
	"testing"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/nfclone/nfclone/sink"
)

// innerEth is a minimal inner Ethernet frame: dst, src, ethertype IPv4, 2
// payload bytes.
var innerEth = []byte{
	0x02, 0x4e, 0x43, 0, 0, 2, // dst
	0x02, 0x4e, 0x43, 0, 0, 1, // src
	0x08, 0x00, // IPv4
	0xaa, 0xbb,
}

func TestDecodeVXLANBytes(t *testing.T) {
	d := append([]byte{
		0x08,             // flags: I
		0x00, 0x00, 0x00, // reserved
		0x00, 0x00, 0x7b, // VNI 123
		0x00, // reserved
	}, innerEth...)
	for _, kind := range []string{"", KindAuto, KindVXLAN} {
		f, err := DecodeKind(d, kind)
		if err != nil || f.Kind != KindVXLAN || f.VNI != 123 || !bytes.Equal(f.Inner, innerEth) {
			t.Fatalf("%q: %+v %v", kind, f, err)
		}
	}
	// Reserved bits set: ignored (RFC 7348: ignored on receipt).
	r := append([]byte(nil), d...)
	r[1], r[7] = 0xff, 0xff
	if f, err := Decode(r); err != nil || f.VNI != 123 {
		t.Fatalf("reserved bits: %+v %v", f, err)
	}
	// No I flag.
	n := append([]byte(nil), d...)
	n[0] = 0
	if _, err := DecodeKind(n, KindVXLAN); !errors.Is(err, ErrVXLANFlags) {
		t.Fatal(err)
	}
	if _, err := Decode(n); !errors.Is(err, ErrUnknown) {
		t.Fatal(err)
	}
	if _, err := Decode(d[:8+13]); !errors.Is(err, ErrInnerShort) {
		t.Fatal(err)
	}
	if _, err := Decode(d[:7]); !errors.Is(err, ErrShort) {
		t.Fatal(err)
	}
}

func TestDecodeGENEVEBytes(t *testing.T) {
	d := append([]byte{
		0x02,       // version 0, option length 2 words (8 bytes)
		0x00,       // O=0 C=0
		0x65, 0x58, // protocol: Ethernet
		0x01, 0x02, 0x03, // VNI 0x010203
		0x00, // reserved
		// one option: class 0x0102, type 0x80 (critical), length 1 word
		0x01, 0x02, 0x80, 0x01,
		0xde, 0xad, 0xbe, 0xef, // option data
	}, innerEth...)
	for _, kind := range []string{KindAuto, KindGENEVE} {
		f, err := DecodeKind(d, kind)
		if err != nil || f.Kind != KindGENEVE || f.VNI != 0x010203 || !bytes.Equal(f.Inner, innerEth) {
			t.Fatalf("%q: %+v %v", kind, f, err)
		}
	}
	bad := func(mod func(b []byte) []byte, want error) {
		t.Helper()
		b := mod(append([]byte(nil), d...))
		if _, err := DecodeKind(b, KindGENEVE); !errors.Is(err, want) {
			t.Fatalf("got %v want %v", err, want)
		}
	}
	bad(func(b []byte) []byte { b[0] |= 0x40; return b }, ErrGENEVEVersion)
	bad(func(b []byte) []byte { b[2], b[3] = 0x88, 0xbe; return b }, ErrGENEVEProto) // not Ethernet or IP
	bad(func(b []byte) []byte { b[1] = 0x80; return b }, ErrGENEVEOAM)
	bad(func(b []byte) []byte { b[0] = 0x3f; return b }, ErrGENEVEOptions) // 252 bytes of options
	bad(func(b []byte) []byte { return b[:16+13] }, ErrInnerShort)
	// optlen 8 starts with 0x08 like VXLAN; the protocol field decides.
	v := append([]byte{0x08, 0, 0x65, 0x58, 0, 0, 5, 0}, make([]byte, 32)...)
	v = append(v, innerEth...)
	if f, err := Decode(v); err != nil || f.Kind != KindGENEVE || len(f.Inner) != len(innerEth) {
		t.Fatalf("geneve optlen 8: %+v %v", f, err)
	}
	if _, err := DecodeKind(d, "gre"); !errors.Is(err, ErrKind) {
		t.Fatal(err)
	}
}

// The sink's encoders and this decoder agree.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, kind := range []string{KindVXLAN, KindGENEVE} {
		for _, vni := range []uint32{0, 1, 4095, 0xffffff} {
			b := make([]byte, 8+len(innerEth))
			if kind == KindVXLAN {
				sink.PutVXLAN(b, vni)
			} else {
				sink.PutGENEVE(b, vni)
			}
			copy(b[8:], innerEth)
			f, err := Decode(b)
			if err != nil || f.Kind != kind || f.VNI != vni || !bytes.Equal(f.Inner, innerEth) {
				t.Fatalf("%s %d: %+v %v", kind, vni, f, err)
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(append([]byte{8, 0, 0, 0, 0, 0, 1, 0}, innerEth...))
	f.Add(append([]byte{1, 0, 0x65, 0x58, 0, 0, 1, 0, 0, 1, 0, 0}, innerEth...))
	f.Add([]byte{0x3f, 0, 0x65, 0x58, 0, 0, 0, 0})
	f.Add([]byte{})
	f.Add(append([]byte{0x10, 0, 0x88, 0xbe, 0, 0, 0, 1, 0x10, 0, 0, 42, 0, 0, 0, 0}, innerEth...))
	f.Add(append([]byte{0x10, 0, 0x22, 0xeb, 0, 0, 0, 1, 0x20, 0, 0, 42, 1, 2, 3, 4, 0, 0, 0x80, 0x01, 1, 2, 3, 4, 5, 6, 7, 8}, innerEth...))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, k := range []string{KindAuto, KindVXLAN, KindGENEVE, KindERSPAN} {
			fr, err := DecodeKind(b, k)
			if err != nil {
				continue
			}
			hdr := 8
			if k == KindERSPAN {
				hdr = 4
			}
			if len(fr.Inner) < 14 && fr.EtherType == 0 || fr.VNI > 0xffffff || len(fr.Inner) > len(b)-hdr {
				t.Fatalf("bad frame %+v from %x", fr, b)
			}
			if &fr.Inner[len(fr.Inner)-1] != &b[len(b)-1] {
				t.Fatal("inner is not the datagram's tail")
			}
		}
		// The collector survives it.
		fuzzCollector.Handle(fuzzTime, fuzzFrom, b)
	})
}

// gwlbDatagram builds what a Gateway Load Balancer sends (the issue's
// capture): GENEVE, VNI 0, 32 bytes of options, protocol IPv4, carrying
// IP 10.10.0.4.65444 > 10.10.0.46.4789 VXLAN vni 9325541 carrying an
// Ethernet frame with IP 52.94.225.236.443 > 10.10.0.4.58254 (TCP ACK).
func gwlbDatagram(t testing.TB, proto uint16) (datagram, innermost []byte) {
	tcp := []byte{
		0x01, 0xbb, 0xe3, 0x8e, // 443 > 58254
		0, 0, 0, 1, // seq
		0xc2, 0xf2, 0x8a, 0x72, // ack 3271274354
		0x50, 0x10, 0x7f, 0xda, // doff 5, ACK, win 32730
		0, 0, 0, 0,
	}
	ip := ipv4(t, [4]byte{52, 94, 225, 236}, [4]byte{10, 10, 0, 4}, 6, tcp)
	innermost = append([]byte{
		0x02, 0, 0, 0, 0, 0x04, // dst
		0x02, 0, 0, 0, 0, 0xfe, // src
		0x08, 0x00,
	}, ip...)
	vx := make([]byte, 8, 8+len(innermost))
	sink.PutVXLAN(vx, 9325541)
	vx = append(vx, innermost...)
	udp := append([]byte{0xff, 0xa4, 0x12, 0xb5, 0, 0, 0, 0}, vx...) // 65444 > 4789
	binary.BigEndian.PutUint16(udp[4:6], uint16(len(udp)))
	mid := ipv4(t, [4]byte{10, 10, 0, 4}, [4]byte{10, 10, 0, 46}, 17, udp)
	if proto == etherTypeTEB {
		mid = append([]byte{0x02, 0, 0, 0, 0, 0x46, 0x02, 0, 0, 0, 0, 0x04, 0x08, 0x00}, mid...)
	}
	g := []byte{
		0x08,       // version 0, 8 words of options (32 bytes)
		0x00,       // O=0 C=0
		0x00, 0x00, // protocol (below)
		0, 0, 0, // VNI 0
		0,
	}
	binary.BigEndian.PutUint16(g[2:4], proto)
	// AWS's TLVs: class 0x0108, types 1, 2, 3; 4+8, 4+8, 4+4 bytes.
	g = append(g,
		0x01, 0x08, 0x01, 0x02, 1, 2, 3, 4, 5, 6, 7, 8, // GWLBE/VPC endpoint id
		0x01, 0x08, 0x02, 0x02, 8, 7, 6, 5, 4, 3, 2, 1, // attachment id
		0x01, 0x08, 0x03, 0x01, 0xaa, 0xbb, 0xcc, 0xdd, // flow cookie
	)
	return append(g, mid...), innermost
}

// ipv4 builds an IPv4 header (DF, TTL 64, checksum) around payload.
func ipv4(t testing.TB, src, dst [4]byte, proto byte, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:4], uint16(20+len(payload)))
	h[6] = 0x40
	h[8], h[9] = 64, proto
	copy(h[12:16], src[:])
	copy(h[16:20], dst[:])
	binary.BigEndian.PutUint16(h[10:12], sink.IPv4Checksum(h))
	return append(h, payload...)
}

// The capture: GENEVE (options, protocol IPv4) carrying VXLAN
// carrying Ethernet/IP comes out as the innermost Ethernet frame, with the
// inner VNI; the same with GENEVE carrying Ethernet.
func TestDecodeGWLBNesting(t *testing.T) {
	for _, proto := range []uint16{etherTypeIPv4, etherTypeTEB} {
		d, want := gwlbDatagram(t, proto)
		for _, kind := range []string{KindAuto, KindGENEVE} {
			f, err := DecodeKind(d, kind)
			if err != nil || f.Kind != KindGENEVE || !f.Nested || f.VNI != 9325541 || f.OuterVNI != 0 ||
				f.EtherType != 0 || !bytes.Equal(f.Inner, want) {
				t.Fatalf("%#x %s: %+v %v", proto, kind, f, err)
			}
		}
	}
	// Not VXLAN inside (another port): the L3 packet itself, to get an
	// Ethernet header.
	d, _ := gwlbDatagram(t, etherTypeIPv4)
	mid := d[40:]
	binary.BigEndian.PutUint16(mid[20+2:20+4], 4790)
	f, err := Decode(d)
	if err != nil || f.Nested || f.EtherType != etherTypeIPv4 || !bytes.Equal(f.Inner, mid) || f.VNI != 0 {
		t.Fatalf("udp 4790: %+v %v", f, err)
	}
	// A UDP length that does not reach the end: not decoded as nested.
	binary.BigEndian.PutUint16(mid[20+2:20+4], 4789)
	binary.BigEndian.PutUint16(mid[20+4:20+6], 30)
	if f, err := Decode(d); err != nil || f.Nested {
		t.Fatalf("udp length: %+v %v", f, err)
	}
	// An IPv4 payload too short for its header.
	g := append([]byte{0, 0, 0x08, 0x00, 0, 0, 1, 0}, 0x45, 0, 0, 20)
	if _, err := Decode(g); !errors.Is(err, ErrInnerIPShort) {
		t.Fatal(err)
	}
	// An IPv6 payload is accepted (Ethernet header synthesized later).
	v6 := append([]byte{0, 0, 0x86, 0xdd, 0, 0, 2, 0, 0x60}, make([]byte, 39)...)
	if f, err := Decode(v6); err != nil || f.EtherType != etherTypeIPv6 || len(f.Inner) != 40 || f.VNI != 2 {
		t.Fatalf("v6: %+v %v", f, err)
	}
}

// The collector writes L3 inner packets behind a synthesized Ethernet
// header and matches --vni against the inner VXLAN VNI.
func TestCollectorGWLB(t *testing.T) {
	var buf bytes.Buffer
	w, err := pcapfile.Open(pcapfile.Config{Writer: &buf, LinkType: sink.LinkTypeEthernet})
	if err != nil {
		t.Fatal(err)
	}
	c := &Collector{cfg: Config{Kind: KindAuto}, allowAll: true, pcap: w, vnis: map[uint32]bool{9325541: true}}
	d, want := gwlbDatagram(t, etherTypeIPv4)
	c.Handle(fuzzTime, fuzzFrom, d)
	// Outer VNI 0 is not the inner one: with --vni 0 it is filtered.
	c2 := &Collector{cfg: Config{Kind: KindAuto}, allowAll: true, pcap: w, vnis: map[uint32]bool{0: true}}
	c2.Handle(fuzzTime, fuzzFrom, d)
	if s := c2.Stats(); s.FilteredVNI != 1 || s.Written != 0 {
		t.Fatalf("%+v", s)
	}
	// Not nested: L3 with a synthesized header.
	binary.BigEndian.PutUint16(d[40+22:40+24], 9999)
	c.vnis = nil
	c.Handle(fuzzTime, fuzzFrom, d)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Written != 2 || s.Malformed != 0 {
		t.Fatalf("%+v", s)
	}
	r, err := pcapgo.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := r.ReadPacketData()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("first: %x %v", got, err)
	}
	got, _, err = r.ReadPacketData()
	if err != nil || !bytes.Equal(got[14:], d[40:]) || !bytes.Equal(got[:14], []byte{2, 0x4e, 0x43, 0, 0, 2, 2, 0x4e, 0x43, 0, 0, 1, 8, 0}) {
		t.Fatalf("second: %x %v", got, err)
	}
}
