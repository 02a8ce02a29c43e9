package gso

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// fuzzSeeds are the packets of the seed corpus in testdata/fuzz/FuzzSplit
// (written by GSO_WRITE_SEEDS=1 go test -run TestFuzzSeedCorpus ./gso).
func fuzzSeeds(t testing.TB) []struct {
	name  string
	pkt   []byte
	mtu   int
	flags Flags
} {
	type seed = struct {
		name  string
		pkt   []byte
		mtu   int
		flags Flags
	}
	partial := func(p []byte) []byte { makePartial(t, p); return p }
	return []seed{
		{"tcp4-ts", build(t, spec{proto: layers.IPProtocolTCP, payload: 600, tsOpt: true, flags: "FPAC"}), 300, GSO | Known},
		{"tcp4-partial-opts", partial(build(t, spec{proto: layers.IPProtocolTCP, payload: 500, ipOpts: true, flags: "A"})), 200, GSO | CsumPartial | Known},
		{"tcp6-ext", build(t, spec{v6: true, proto: layers.IPProtocolTCP, payload: 600, tsOpt: true, flags: "A", ext: []layers.IPProtocol{hbh, dstOpts, routing}}), 300, 0},
		{"udp4-gso", partial(build(t, spec{proto: layers.IPProtocolUDP, payload: 600})), 300, GSO | CsumPartial | Known},
		{"udp6-gso", build(t, spec{v6: true, proto: layers.IPProtocolUDP, payload: 600}), 300, GSO | Known},
		{"udp4-frag-opts", build(t, spec{proto: layers.IPProtocolUDP, payload: 600, ipOpts: true}), 200, Known},
		{"udp4-df", build(t, spec{proto: layers.IPProtocolUDP, payload: 500, df: true}), 300, Known},
		{"udp6-frag-ext", partial(build(t, spec{v6: true, proto: layers.IPProtocolUDP, payload: 600, ext: []layers.IPProtocol{hbh, routing, dstOpts}})), 300, 0},
		{"icmp6-frag", build(t, spec{v6: true, proto: layers.IPProtocolICMPv6, payload: 500}), 300, Known},
		{"small", build(t, spec{proto: layers.IPProtocolTCP, payload: 10, flags: "S"}), 1500, Known},
	}
}

func FuzzSplit(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s.pkt, s.mtu, uint8(s.flags), uint32(1))
	}
	// Output buffers are shared between runs (a fuzz process calls the
	// target sequentially); 512 of the largest mtu.
	const maxMTU, maxOut = 68 + 9000, 512
	back := make([]byte, maxOut*maxMTU)
	f.Fuzz(func(t *testing.T, pkt []byte, mtu int, flags uint8, fragID uint32) {
		checkSplit(t, pkt, mtu, flags, fragID, back)
	})
}

// checkSplit is the fuzz target's body: Split of pkt for an mtu in
// [68, 9068) with out in back. Beyond never panicking: an error comes
// alone, no packet is larger than the mtu, every packet has a consistent IP
// header, segments have complete checksums and carry the original payload,
// fragments reassemble to the original datagram.
func checkSplit(t *testing.T, pkt []byte, mtu int, flags uint8, fragID uint32, back []byte) {
	const maxMTU, maxOut = 68 + 9000, 512
	{
		if mtu < 68 || mtu >= maxMTU {
			mtu = 68 + (mtu%9000+9000)%9000
		}
		out := make([][]byte, min(MaxSegments(mtu), maxOut))
		for i := range out {
			out[i] = back[i*mtu : i*mtu : (i+1)*mtu]
		}
		in := append([]byte(nil), pkt...)
		l, perr := parse(in)
		n, err := Split(pkt, mtu, Flags(flags), fragID, out)
		if err != nil {
			var e *Error
			if n != 0 || !errors.As(err, &e) {
				t.Fatalf("Split = %d, %v: an error must come alone and be an *Error", n, err)
			}
			return
		}
		if n == 0 {
			if len(pkt) > mtu {
				t.Fatalf("%d-byte packet not split for mtu %d", len(pkt), mtu)
			}
			return
		}
		if perr != nil {
			t.Fatalf("Split succeeded on a packet parse rejects: %v", perr)
		}
		for i, seg := range out[:n] {
			if len(seg) > mtu {
				t.Fatalf("packet %d: %d bytes > mtu %d", i, len(seg), mtu)
			}
			if err := validIP(seg); err != nil {
				t.Fatalf("packet %d of %d: %v: % x", i, n, err, seg[:min(len(seg), 64)])
			}
		}
		switch {
		case n == 1 && l.ipLen <= mtu:
		case !l.frag && (l.proto == protoTCP || l.proto == protoUDP && Flags(flags)&GSO != 0):
			// Segments: each checksum complete, payloads add up.
			var payload []byte
			hdr := len(in[:l.ipLen]) - (l.ipLen - l.l4Off - 8)
			if l.proto == protoTCP {
				hdr = l.l4Off + int(in[l.l4Off+12]>>4)*4
			}
			for i, seg := range out[:n] {
				c := append([]byte(nil), seg...)
				if FixPartial(c, CsumPartial|Known) {
					t.Fatalf("segment %d: checksum not complete", i)
				}
				payload = append(payload, seg[hdr:]...)
			}
			if !bytes.Equal(payload, in[hdr:l.ipLen]) {
				t.Fatalf("segments carry %d bytes that differ from the %d of the original", len(payload), l.ipLen-hdr)
			}
		case !l.frag:
			// Fragments reassemble to the datagram (with its checksum
			// completed in place).
			// Fragments carry a correct header checksum, the input may not.
			want := append([]byte(nil), pkt[:l.ipLen]...)
			if !l.v6 {
				putIPv4Checksum(want[:l.l4Off])
			}
			if got := reassemble(t, out[:n]); !bytes.Equal(got, want) {
				t.Fatalf("fragments do not reassemble to the datagram:\n got % x\nwant % x", got[:min(len(got), 64)], want[:min(len(want), 64)])
			}
		}
	}
}

// validIP checks what a receiver checks first: the version, the header
// length, the IP length equal to the packet's, the IPv4 header checksum.
func validIP(p []byte) error {
	if len(p) < 20 {
		return fmt.Errorf("%d bytes", len(p))
	}
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&0xf) * 4
		if ihl < 20 || ihl > len(p) {
			return fmt.Errorf("IPv4 header length %d in %d bytes", ihl, len(p))
		}
		if tl := int(p[2])<<8 | int(p[3]); tl != len(p) {
			return fmt.Errorf("IPv4 total length %d in %d bytes", tl, len(p))
		}
		if s := refSum(p[:ihl], 0); s != 0xffff {
			return fmt.Errorf("IPv4 header sums to %#04x", s)
		}
	case 6:
		if len(p) < 40 || 40+(int(p[4])<<8|int(p[5])) != len(p) {
			return fmt.Errorf("IPv6 payload length wrong for %d bytes", len(p))
		}
	default:
		return fmt.Errorf("version %d", p[0]>>4)
	}
	return nil
}

// TestFuzzSeedCorpus checks that the seed corpus holds the current seeds
// (or writes it with GSO_WRITE_SEEDS=1), so that `make fuzz` starts from
// packets of every kind Split handles.
func TestFuzzSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzSplit")
	for _, s := range fuzzSeeds(t) {
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nint(%d)\nbyte(%s)\nuint32(1)\n",
			strconv.Quote(string(s.pkt)), s.mtu, strconv.QuoteRune(rune(s.flags)))
		path := filepath.Join(dir, s.name)
		if os.Getenv("GSO_WRITE_SEEDS") == "1" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("seed %s: %v (GSO_WRITE_SEEDS=1 go test -run TestFuzzSeedCorpus ./gso writes it)", s.name, err)
		}
		if !strings.EqualFold(string(got), want) {
			t.Fatalf("seed %s differs from the test's packet; rewrite with GSO_WRITE_SEEDS=1", s.name)
		}
	}
}

// TestSplitMutated runs the fuzz target's checks on seeds with random
// bytes changed and random cuts, in every `go test` (FuzzSplit explores
// further under `make fuzz`).
func TestSplitMutated(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	seeds := fuzzSeeds(t)
	back := make([]byte, 512*(68+9000))
	for it := 0; it < 20000; it++ {
		s := seeds[r.IntN(len(seeds))]
		pkt := append([]byte(nil), s.pkt...)
		for k := r.IntN(4); k >= 0; k-- {
			pkt[r.IntN(len(pkt))] = byte(r.Uint32())
		}
		if r.IntN(4) == 0 {
			pkt = pkt[:r.IntN(len(pkt))]
		}
		checkSplit(t, pkt, 68+r.IntN(1500), uint8(r.IntN(8)), 1, back)
	}
}
