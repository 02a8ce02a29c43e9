//go:build !race

package gso

import (
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// TestNoAllocations: Split and FixPartial allocate nothing per packet. (The
// race detector allocates, hence the build constraint.)
func TestNoAllocations(t *testing.T) {
	for _, tc := range []struct {
		name  string
		s     spec
		flags Flags
	}{
		{"TCP v4 64K", spec{proto: layers.IPProtocolTCP, payload: 65535 - 20 - 32, tsOpt: true, flags: "AP"}, GSO | CsumPartial | Known},
		{"TCP v6 64K", spec{v6: true, proto: layers.IPProtocolTCP, payload: 65535 - 32, tsOpt: true, flags: "AP"}, GSO | CsumPartial | Known},
		{"UDP GSO", spec{proto: layers.IPProtocolUDP, payload: 60000}, GSO | CsumPartial | Known},
		{"IPv4 fragments", spec{proto: layers.IPProtocolUDP, payload: 60000, ipOpts: true}, CsumPartial | Known},
		{"IPv6 fragments", spec{v6: true, proto: layers.IPProtocolUDP, payload: 60000, ext: []layers.IPProtocol{hbh, routing}}, CsumPartial | Known},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := build(t, tc.s)
			out := outBufs(MaxSegments(1500), 1500)
			var n int
			var err error
			if a := testing.AllocsPerRun(20, func() { n, err = Split(pkt, 1500, tc.flags, 1, out) }); a != 0 {
				t.Errorf("Split: %v allocations per packet, want 0", a)
			}
			if err != nil || n < 2 {
				t.Fatalf("Split = %d, %v: the measurement measured nothing", n, err)
			}
			var changed bool
			if a := testing.AllocsPerRun(20, func() { makePartialFast(pkt, tc.s); changed = FixPartial(pkt, tc.flags) }); a != 0 {
				t.Errorf("FixPartial: %v allocations per packet, want 0", a)
			}
			if !changed && tc.s.proto == layers.IPProtocolTCP {
				t.Fatalf("FixPartial changed nothing: the measurement measured nothing")
			}
		})
	}
}

// makePartialFast puts a wrong value in the checksum field of the TCP test
// packet pkt, so that FixPartial has work to do; it allocates nothing.
func makePartialFast(pkt []byte, s spec) {
	if s.proto != layers.IPProtocolTCP {
		return
	}
	off := 20 + 16
	if s.v6 {
		off = 40 + 16
	}
	pkt[off] ^= 0xff
}
