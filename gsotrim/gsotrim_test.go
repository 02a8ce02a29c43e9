package gsotrim

import (
	"bytes"
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// Limits outside [MinLimit, 65535] are refused before anything is loaded.
func TestLoadLimits(t *testing.T) {
	for _, l := range []int{0, MinLimit - 1, 65536} {
		if p, m, err := Load(l); err == nil || !strings.Contains(err.Error(), "out of") {
			if p != nil {
				p.Close()
				m.Close()
			}
			t.Errorf("Load(%d): %v, want an out-of-range error", l, err)
		}
	}
}

// The program is one straight pass with labels that resolve: every jump
// lands on an instruction of its own.
func TestInstructionsResolve(t *testing.T) {
	in := Instructions(1450, 3)
	if err := in.Marshal(new(bytes.Buffer), binary.LittleEndian); err != nil {
		t.Fatalf("the instructions do not assemble: %v", err)
	}
	refs := 0
	for _, i := range in {
		if i.Reference() != "" {
			refs++
		}
	}
	if refs < 10 {
		t.Errorf("%d jumps, want the checks that let a packet pass", refs)
	}
}

// tcpPacket is an Ethernet frame with an IPv4 TCP segment of n payload bytes.
func tcpPacket(n int) []byte {
	b := make([]byte, 14+20+32+n)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+32+n))
	ip[8], ip[9] = 64, 6
	copy(ip[12:], []byte{10, 77, 1, 2, 10, 77, 2, 2})
	tcp := ip[20:]
	tcp[12] = 8 << 4
	for i := range n {
		tcp[32+i] = byte(i)
	}
	return b
}

// The kernel verifies and runs the program: a packet that is not a
// super-packet passes (TCX_NEXT) with every byte as it was, and one longer
// than the limit is counted as fragmented.
func TestKernelPassesSinglePackets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (loading a BPF program)")
	}
	p, m, err := Load(1450)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	defer m.Close()
	for _, n := range []int{0, 100, 1398, 1399, 1448} { // 1398: an IP packet of 1450
		in := tcpPacket(n)
		out := make([]byte, len(in)+256)
		ret, err := p.Run(&ebpf.RunOptions{Data: in, DataOut: out})
		if err != nil {
			t.Fatalf("running the program on a %d-byte segment: %v", n, err)
		}
		if int32(ret) != tcxNext {
			t.Errorf("%d-byte segment: returned %d, want TCX_NEXT (%d)", n, int32(ret), tcxNext)
		}
		if !bytes.Equal(out[:len(in)], in) {
			t.Errorf("%d-byte segment changed", n)
		}
	}
	c, err := readCounts(m)
	if err != nil {
		t.Fatal(err)
	}
	if c != (Counts{Fragmented: 2}) {
		t.Errorf("counts %+v, want the 1399- and 1448-byte segments as fragmented and nothing cut", c)
	}
}
