package gso

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// l4Field is the offset of the checksum field of the test packet pkt.
func l4Field(t *testing.T, pkt []byte) int {
	t.Helper()
	p := decode(t, pkt)
	if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		return len(pkt) - len(tcp.Payload) - len(tcp.Contents) + 16
	}
	udp := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	return len(pkt) - len(udp.Payload) - 8 + 6
}

func TestFixPartial(t *testing.T) {
	specs := []struct {
		name string
		s    spec
	}{
		{"TCP v4", spec{proto: layers.IPProtocolTCP, payload: 1000, tsOpt: true, flags: "AP"}},
		{"TCP v4 odd, source route", spec{proto: layers.IPProtocolTCP, payload: 999, ipOpts: true, flags: "A"}},
		{"UDP v4", spec{proto: layers.IPProtocolUDP, payload: 1001}},
		{"TCP v6", spec{v6: true, proto: layers.IPProtocolTCP, payload: 1400, flags: "A"}},
		{"UDP v6 ext headers", spec{v6: true, proto: layers.IPProtocolUDP, payload: 77, ext: []layers.IPProtocol{hbh, routing, dstOpts}}},
		{"TCP v6 no payload", spec{v6: true, proto: layers.IPProtocolTCP, flags: "A"}},
	}
	for _, sp := range specs {
		t.Run(sp.name, func(t *testing.T) {
			valid := build(t, sp.s)
			field := l4Field(t, valid)

			// The partial form, marked by the kernel or detected (NFLOG):
			// completed to the valid packet.
			for _, f := range []Flags{CsumPartial | Known, CsumPartial, 0} {
				pkt := append([]byte(nil), valid...)
				makePartial(t, pkt)
				if !FixPartial(pkt, f) {
					t.Fatalf("flags %03b: FixPartial reports no change to a partial checksum", f)
				}
				if !bytes.Equal(pkt, valid) {
					t.Fatalf("flags %03b: checksum %#04x, want %#04x", f, binary.BigEndian.Uint16(pkt[field:]), binary.BigEndian.Uint16(valid[field:]))
				}
				checkL4(t, pkt)
			}
			// The partial form when the kernel said the checksum is
			// complete: left alone (the kernel knows).
			pkt := append([]byte(nil), valid...)
			makePartial(t, pkt)
			before := append([]byte(nil), pkt...)
			if FixPartial(pkt, Known) || !bytes.Equal(pkt, before) {
				t.Fatalf("Known without CsumPartial: the packet changed")
			}
			// A valid packet is never changed, whatever the flags.
			for _, f := range []Flags{0, Known, CsumPartial | Known} {
				pkt := append([]byte(nil), valid...)
				if FixPartial(pkt, f) || !bytes.Equal(pkt, valid) {
					t.Fatalf("flags %03b: a valid packet changed", f)
				}
			}
			// A bad checksum that is not the partial form stays bad
			// when nothing says it is partial.
			bad := append([]byte(nil), valid...)
			bad[field] ^= 0x5a
			pkt = append([]byte(nil), bad...)
			if FixPartial(pkt, 0) || !bytes.Equal(pkt, bad) {
				t.Fatalf("a bad checksum was changed")
			}
		})
	}
}

// TestFixPartialZeroForms: a field of 0x0000 is the partial form when the
// pseudo-header folds to 0xffff (and the reverse).
func TestFixPartialZeroForms(t *testing.T) {
	valid := build(t, spec{proto: layers.IPProtocolTCP, payload: 100, flags: "A"})
	field := l4Field(t, valid)
	// Choose a source address whose pseudo-header sum folds to 0xffff.
	pkt := append([]byte(nil), valid...)
	l4Len := len(pkt) - (field - 16)
	for v := 0; v < 0x10000; v++ {
		binary.BigEndian.PutUint16(pkt[14:16], uint16(v))
		if refSum(nil, refPseudo(pkt[12:16], pkt[16:20], 6, l4Len)) == 0xffff {
			break
		}
	}
	putIPv4Checksum(pkt[:20])
	binary.BigEndian.PutUint16(pkt[field:], 0)
	if !FixPartial(pkt, 0) {
		t.Fatalf("0x0000 not recognised as the partial form 0xffff")
	}
	checkL4(t, pkt)
}

func TestFixPartialUDPZero(t *testing.T) {
	// IPv4 UDP without a checksum keeps none, even when marked partial.
	pkt := build(t, spec{proto: layers.IPProtocolUDP, payload: 100, noUDPSum: true})
	before := append([]byte(nil), pkt...)
	for _, f := range []Flags{0, CsumPartial | Known} {
		if FixPartial(pkt, f) || !bytes.Equal(pkt, before) {
			t.Fatalf("flags %03b: an IPv4 UDP checksum of zero was changed", f)
		}
	}
	// A computed UDP checksum of zero is sent as 0xffff: search a payload
	// byte that makes it zero.
	pkt = build(t, spec{v6: true, proto: layers.IPProtocolUDP, payload: 40})
	for v := 0; v < 0x10000; v++ {
		binary.BigEndian.PutUint16(pkt[48:50], uint16(v))
		pkt[46], pkt[47] = 0, 0
		if refSum(pkt[40:], refPseudo(src6, dst6, 17, len(pkt)-40)) == 0xffff {
			break
		}
	}
	if !FixPartial(pkt, CsumPartial|Known) {
		t.Fatalf("no change")
	}
	if got := binary.BigEndian.Uint16(pkt[46:48]); got != 0xffff {
		t.Fatalf("UDP checksum computed as zero written as %#04x, want 0xffff", got)
	}
	checkL4(t, pkt)
}

func TestFixPartialLeavesAlone(t *testing.T) {
	tcp := build(t, spec{proto: layers.IPProtocolTCP, payload: 1000, flags: "A"})
	makePartial(t, tcp)
	frag := append([]byte(nil), tcp...)
	binary.BigEndian.PutUint16(frag[6:8], 0x2000) // MF
	putIPv4Checksum(frag[:20])
	icmp := build(t, spec{proto: layers.IPProtocolICMPv4, payload: 100})
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"truncated", tcp[:500]},
		{"fragment", frag},
		{"ICMP", icmp},
		{"short", tcp[:10]},
		{"empty", nil},
	} {
		before := append([]byte(nil), tc.pkt...)
		if FixPartial(tc.pkt, CsumPartial|Known) || !bytes.Equal(tc.pkt, before) {
			t.Errorf("%s: changed", tc.name)
		}
	}
}

// TestFlagsMatchKernel: Flags(info&3) converts NFQA_SKB_INFO, whose bits
// are NFQA_SKB_CSUMNOTREADY (1 << 0) and NFQA_SKB_GSO (1 << 1) in
// include/uapi/linux/netfilter/nfnetlink_queue.h.
func TestFlagsMatchKernel(t *testing.T) {
	const csumNotReady, gso = 1 << 0, 1 << 1
	if CsumPartial != csumNotReady || GSO != gso || Known&(csumNotReady|gso) != 0 {
		t.Fatalf("CsumPartial %d, GSO %d, Known %d: not the kernel's bits", CsumPartial, GSO, Known)
	}
}
