package sink

import (
	"github.com/nfclone/nfclone/packet"
	"testing"
)

// FuzzPacket feeds arbitrary bytes, as a copy from the kernel, to the
// per-packet code: the IP header parser, the flow hash (IPv4 options, IPv6
// extension headers, fragments, truncated headers) and the truncation fix-up.
// Nothing panics and nothing writes beyond the packet.
func FuzzPacket(f *testing.F) {
	v4 := []byte{0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 77, 1, 2, 10, 77, 1, 1, 0x9c, 0x40, 0, 9, 0, 8, 0, 0}
	v4opts := []byte{0x46, 0, 0, 32, 0, 1, 0x20, 0, 64, 6, 0, 0, 10, 77, 1, 2, 10, 77, 1, 1, 1, 1, 1, 0, 0, 80, 1, 187}
	v6frag := append([]byte{0x60, 0, 0, 0, 0, 16, 44, 64}, make([]byte, 32)...)
	v6frag = append(v6frag, 17, 0, 0, 1, 0, 0, 0, 1, 0, 53, 0, 53, 0, 8, 0, 0)
	v6hop := append([]byte{0x60, 0, 0, 0, 0, 16, 0, 64}, make([]byte, 32)...)
	v6hop = append(v6hop, 6, 0, 1, 4, 0, 0, 0, 0, 0, 80, 0, 80)
	for _, s := range [][]byte{v4, v4opts, v6frag, v6hop, {0x45}, {0x60, 0}, {}, {0x4f, 0, 0xff, 0xff}} {
		f.Add(s, 0)
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		_ = FlowHash(b)
		fam, origLen, ok := packet.IPInfo(b)
		if !ok {
			return
		}
		p := packet.New(b)
		p.Family, p.OrigLen = fam, origLen
		if cut > 0 && cut < len(p.Data) {
			p.Data = p.Data[:len(p.Data)-cut] // a snaplen-truncated copy
		}
		n := len(p.Data)
		FixTruncated(p)
		if len(p.Data) != n {
			t.Fatalf("FixTruncated changed the length: %d → %d", n, len(p.Data))
		}
		p.Release()
	})
}
