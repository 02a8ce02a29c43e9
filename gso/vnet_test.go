package gso

import (
	"encoding/binary"
	"testing"
)

// PrepareTCP takes only whole TCP packets larger than the MTU, and leaves
// everything else untouched.
func TestPrepareTCP(t *testing.T) {
	v6 := make([]byte, 40+20+5000)
	v6[0] = 0x60
	binary.BigEndian.PutUint16(v6[4:], 20+5000)
	v6[6], v6[7] = protoTCP, 64
	v6[40+12] = 5 << 4
	v6[40+13] = tcpCWR | 0x10
	o, ok := PrepareTCP(v6, 1500)
	if !ok || o.Type != vnetGSOTCPv6|vnetGSOECN || o.Size != 1500-60 || o.HdrLen != 60 || o.CsumStart != 40 || o.CsumOffset != 16 {
		t.Fatalf("IPv6 TCP: %+v %v", o, ok)
	}
	if want := Fold(PseudoHeaderSum6(v6[8:24], v6[24:40], protoTCP, 5020)); binary.BigEndian.Uint16(v6[56:58]) != want {
		t.Errorf("checksum field %#x, want the partial form %#x", binary.BigEndian.Uint16(v6[56:58]), want)
	}
	for name, pkt := range map[string][]byte{
		"small":     v6[:1400],
		"udp":       func() []byte { b := append([]byte(nil), v6...); b[6] = protoUDP; return b }(),
		"truncated": v6[:3000],
		"mtu":       v6,
	} {
		before := append([]byte(nil), pkt...)
		mtu := 1500
		if name == "mtu" {
			mtu = 64 // no room for payload after 60 bytes of headers
		}
		if o, ok := PrepareTCP(pkt, mtu); ok {
			t.Errorf("%s: prepared %+v", name, o)
		}
		if string(before) != string(pkt) {
			t.Errorf("%s: changed", name)
		}
	}
	var h [VirtioNetHdrLen]byte
	PutVirtioNetHdr(h[:], Offload{}, 14)
	if h != [VirtioNetHdrLen]byte{} {
		t.Errorf("empty offload wrote % x", h)
	}
}
