package sink

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

func flowPkt4(i int) []byte {
	b := ipv4(40, [4]byte{10, 77, byte(i >> 8), byte(i)})
	b[9] = 6
	binary.BigEndian.PutUint16(b[20:22], uint16(1024+i*7))
	binary.BigEndian.PutUint16(b[22:24], 443)
	return b
}

func TestFlowHashFields(t *testing.T) {
	a := flowPkt4(1)
	b := append([]byte(nil), a...)
	// Payload, TTL, ID and checksum do not matter.
	b[8], b[4], b[10], b[30] = 1, 0x12, 0x34, 0x99
	if FlowHash(a) != FlowHash(b) {
		t.Fatal("hash depends on non-flow fields")
	}
	c := append([]byte(nil), a...)
	c[21]++ // source port
	if FlowHash(a) == FlowHash(c) {
		t.Fatal("hash ignores the source port")
	}
	// A fragment hashes without ports: both fragments of a packet agree.
	f1 := append([]byte(nil), a...)
	f1[6] = 0x20 // MF
	f2 := append([]byte(nil), c...)
	f2[6], f2[7] = 0x00, 0x10 // offset 16
	if FlowHash(f1) != FlowHash(f2) {
		t.Fatal("fragments of one flow hash differently")
	}
	// ICMP: no ports.
	d := append([]byte(nil), a...)
	d[9] = 1
	e := append([]byte(nil), d...)
	e[21]++
	if FlowHash(d) != FlowHash(e) {
		t.Fatal("ICMP hash reads ports")
	}
	// IPv6: ports behind a fragment header are ignored; through a
	// destination-options header they count.
	v6 := ipv6(64)
	binary.BigEndian.PutUint16(v6[40:42], 1000)
	w6 := append([]byte(nil), v6...)
	binary.BigEndian.PutUint16(w6[40:42], 1001)
	if FlowHash(v6) == FlowHash(w6) {
		t.Fatal("IPv6 hash ignores ports")
	}
	opt := ipv6(72)
	opt[6] = 60  // destination options
	opt[40] = 17 // next: UDP
	opt[41] = 0  // 8 bytes
	opt2 := append([]byte(nil), opt...)
	binary.BigEndian.PutUint16(opt2[48:50], 7)
	if FlowHash(opt) == FlowHash(opt2) {
		t.Fatal("IPv6 ports after an extension header ignored")
	}
	// Short and garbage input never panics.
	for n := 0; n < 48; n++ {
		FlowHash(a[:min(n, len(a))])
		FlowHash(v6[:n])
	}
	if testing.AllocsPerRun(100, func() { FlowHash(a); FlowHash(v6) }) != 0 {
		t.Fatal("FlowHash allocates")
	}
}

func testRemotes(n int) []netip.AddrPort {
	r := make([]netip.AddrPort, n)
	for i := range r {
		r[i] = netip.MustParseAddrPort(fmt.Sprintf("10.77.4.%d:4789", i+2))
	}
	return r
}

func TestPickRemoteStickyEvenMinimal(t *testing.T) {
	const flows = 10000
	remotes := testRemotes(5)
	hrw := NewRendezvous(remotes)
	owner := make([]int, flows)
	count := make([]int, len(remotes))
	for i := range flows {
		f := FlowHash(flowPkt4(i))
		owner[i] = PickRemote(f, remotes)
		if hrw.Pick(f) != owner[i] || PickRemote(f, remotes) != owner[i] {
			t.Fatal("choice not sticky")
		}
		count[owner[i]]++
	}
	for r, c := range count {
		if c < flows/5*80/100 || c > flows/5*120/100 {
			t.Errorf("remote %d got %d of %d flows (uneven)", r, c, flows)
		}
	}
	t.Logf("spread over 5: %v", count)
	// Order does not matter.
	rev := []netip.AddrPort{remotes[4], remotes[3], remotes[2], remotes[1], remotes[0]}
	// Remove remote 2: only its flows move.
	less := append(append([]netip.AddrPort(nil), remotes[:2]...), remotes[3:]...)
	moved := 0
	for i := range flows {
		f := FlowHash(flowPkt4(i))
		if remotes[owner[i]] != rev[PickRemote(f, rev)] {
			t.Fatal("choice depends on the order of the remotes")
		}
		now := less[PickRemote(f, less)]
		if now != remotes[owner[i]] {
			if owner[i] != 2 {
				t.Fatalf("flow %d moved from %v (not removed) to %v", i, remotes[owner[i]], now)
			}
			moved++
		} else if owner[i] == 2 {
			t.Fatal("flow of the removed remote stayed on it")
		}
	}
	if moved != count[2] {
		t.Fatalf("moved %d, want %d", moved, count[2])
	}
	if PickRemote(1, nil) != -1 || NewRendezvous(nil).Pick(1) != -1 {
		t.Fatal("empty list")
	}
}

func BenchmarkFlowHash(b *testing.B) {
	p := flowPkt4(3)
	for i := 0; i < b.N; i++ {
		FlowHash(p)
	}
}

// reverse swaps the addresses and ports of an IPv4 or IPv6 TCP/UDP packet
// (no extension headers): the reply direction of the same connection.
func reverse(b []byte) []byte {
	r := append([]byte(nil), b...)
	switch b[0] >> 4 {
	case 4:
		copy(r[12:16], b[16:20])
		copy(r[16:20], b[12:16])
		copy(r[20:22], b[22:24])
		copy(r[22:24], b[20:22])
	case 6:
		copy(r[8:24], b[24:40])
		copy(r[24:40], b[8:24])
		copy(r[40:42], b[42:44])
		copy(r[42:44], b[40:42])
	}
	return r
}

// Both directions of a connection go to the same collector and leave from
// the same outer source port (issue: a `both` session split a connection's
// directions over two collectors), and the two endpoints still count: a
// connection is not confused with one whose ports are swapped on one side.
func TestFlowHashSymmetric(t *testing.T) {
	remotes := testRemotes(3)
	hrw := NewRendezvous(remotes)
	for i := range 2000 {
		a := flowPkt4(i)
		if FlowHash(a) != FlowHash(reverse(a)) {
			t.Fatalf("flow %d: the two directions hash differently", i)
		}
		if hrw.Pick(FlowHash(a)) != hrw.Pick(FlowHash(reverse(a))) {
			t.Fatalf("flow %d: the two directions go to different collectors", i)
		}
	}
	v6 := ipv6(64)
	v6[6] = 6
	v6[23] = 1
	v6[39] = 2
	binary.BigEndian.PutUint16(v6[40:42], 40000)
	binary.BigEndian.PutUint16(v6[42:44], 80)
	if FlowHash(v6) != FlowHash(reverse(v6)) {
		t.Fatal("IPv6: the two directions hash differently")
	}
	// Same addresses, ports crossed on one side: another connection.
	a := flowPkt4(5)
	b := append([]byte(nil), a...)
	copy(b[20:22], a[22:24])
	copy(b[22:24], a[20:22])
	if FlowHash(a) == FlowHash(b) {
		t.Fatal("ports crossed on one side hash like the connection itself")
	}
	// Two hosts talking to each other on the same port pair (a == b ports).
	c := flowPkt4(6)
	binary.BigEndian.PutUint16(c[20:22], 443)
	if FlowHash(c) != FlowHash(reverse(c)) {
		t.Fatal("equal ports: the two directions hash differently")
	}
}
