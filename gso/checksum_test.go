package gso

import (
	"math/rand/v2"
	"testing"
)

// TestSum compares Sum and Fold with refSum on every length up to 300 and
// every start alignment, with and without an initial value, on random and
// on all-ones data (the most carries).
func TestSum(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 320)
	for _, fill := range []string{"random", "ones"} {
		for i := range buf {
			if fill == "random" {
				buf[i] = byte(r.Uint32())
			} else {
				buf[i] = 0xff
			}
		}
		for start := 0; start < 8; start++ {
			for n := 0; n <= 300; n++ {
				b := buf[start : start+n]
				if got, want := Fold(Sum(b, 0)), refSum(b, 0); got != want && !(n > 0 && got == 0xffff && want == 0) {
					t.Fatalf("%s data, %d bytes at %d: Fold(Sum) = %#04x, reference %#04x", fill, n, start, got, want)
				}
				for _, init := range []uint64{uint64(0xfffffffffff0 + n), ^uint64(n)} {
					want := refSum(b, uint32(Fold(init)))
					if got := Fold(Sum(b, init)); got != want {
						t.Fatalf("%s data, %d bytes, initial %#x: %#04x, reference %#04x", fill, n, init, got, want)
					}
				}
			}
		}
	}
}

// TestSumChained: an even-length prefix summed first and passed as the
// initial value gives the sum of the whole.
func TestSumChained(t *testing.T) {
	b := make([]byte, 1001)
	for i := range b {
		b[i] = byte(i * 31)
	}
	for cut := 0; cut <= len(b); cut += 2 {
		if got, want := Fold(Sum(b[cut:], Sum(b[:cut], 0))), Fold(Sum(b, 0)); got != want {
			t.Fatalf("cut at %d: %#04x, whole %#04x", cut, got, want)
		}
	}
}

// TestFold covers the carries of the fold: sums that wrap 16, 32 and 64
// bits, and zero, which only all-zero data gives.
func TestFold(t *testing.T) {
	for _, tc := range []struct {
		sum  uint64
		want uint16
	}{
		{0, 0},
		{0xffff, 0xffff},
		{0x10000, 1},
		{0x1fffe, 0xffff},
		{0xffffffff, 0xffff},
		{0xffffffffffffffff, 0xffff},
		{0x0001000000000000, 1},
		{0x8000800080008000, 2},
	} {
		if got := Fold(tc.sum); got != tc.want {
			t.Errorf("Fold(%#x) = %#04x, want %#04x", tc.sum, got, tc.want)
		}
	}
}

// TestChecksumRFC1071 is the example of RFC 1071 section 3: the bytes
// 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
func TestChecksumRFC1071(t *testing.T) {
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := Fold(Sum(b, 0)); got != 0xddf2 {
		t.Fatalf("sum %#04x, RFC 1071 says 0xddf2", got)
	}
	if got := Checksum(b, 0); got != ^uint16(0xddf2) {
		t.Fatalf("checksum %#04x, want %#04x", got, ^uint16(0xddf2))
	}
}

func TestPseudoHeaderSums(t *testing.T) {
	if got, want := Fold(PseudoHeaderSum4(src4.To4(), dst4.To4(), 6, 1480)), refSum(nil, refPseudo(src4, dst4, 6, 1480)); got != want {
		t.Errorf("IPv4: %#04x, reference %#04x", got, want)
	}
	if got, want := Fold(PseudoHeaderSum6(src6, dst6, 17, 70000)), refSum(nil, refPseudo(src6, dst6, 17, 70000)); got != want {
		t.Errorf("IPv6: %#04x, reference %#04x", got, want)
	}
}
