package collect

import (
	"bytes"
	"errors"
	"testing"

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
	bad(func(b []byte) []byte { b[2], b[3] = 0x08, 0x00; return b }, ErrGENEVEProto) // IPv4 payload
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
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, k := range []string{KindAuto, KindVXLAN, KindGENEVE} {
			fr, err := DecodeKind(b, k)
			if err != nil {
				continue
			}
			if len(fr.Inner) < 14 || fr.VNI > 0xffffff || len(fr.Inner) > len(b)-8 {
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
