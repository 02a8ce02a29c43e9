package gso

import (
	"testing"

	"github.com/gopacket/gopacket/layers"
)

func BenchmarkChecksum(b *testing.B) {
	for _, size := range []int{64 << 10, 1500} {
		buf := make([]byte, size)
		for i := range buf {
			buf[i] = byte(i * 13)
		}
		b.Run(sizeName(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			var s uint16
			for b.Loop() {
				s += Checksum(buf, 0)
			}
			sink16 = s
		})
	}
}

var sink16 uint16

func sizeName(n int) string {
	if n%1024 == 0 {
		return itoa(n/1024) + "KiB"
	}
	return itoa(n) + "B"
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// BenchmarkSplitTCP64K: a 64 KiB TCP super-packet (timestamps) cut for
// mtu 1500, 45 segments with full checksums.
func BenchmarkSplitTCP64K(b *testing.B) {
	for _, v6 := range []bool{false, true} {
		name := "v4"
		if v6 {
			name = "v6"
		}
		b.Run(name, func(b *testing.B) {
			pkt := build(b, spec{v6: v6, proto: layers.IPProtocolTCP, payload: 65535 - 60 - 32, tsOpt: true, flags: "AP"})
			out := outBufs(MaxSegments(1500), 1500)
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Split(pkt, 1500, GSO|CsumPartial|Known, 0, out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFixPartial1500: completing the checksum of a 1500-byte TCP
// packet marked partial.
func BenchmarkFixPartial1500(b *testing.B) {
	pkt := build(b, spec{proto: layers.IPProtocolTCP, payload: 1500 - 20 - 32, tsOpt: true, flags: "A"})
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		pkt[36] ^= 0xff // a wrong value, as a partial one is
		if !FixPartial(pkt, CsumPartial|Known) {
			b.Fatal("nothing fixed")
		}
	}
}
