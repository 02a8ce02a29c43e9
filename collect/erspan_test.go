package collect

import (
	"bytes"
	"errors"
	"github.com/nfclone/nfclone/dedup"
	"github.com/nfclone/nfclone/pcapfile"
	"hash/maphash"
	"testing"
	"time"

	"github.com/nfclone/nfclone/sink"
)

// The sink's ERSPAN encoder and this decoder agree (types II and III).
func TestERSPANRoundTrip(t *testing.T) {
	for _, v := range []int{2, 3} {
		for _, id := range []uint16{0, 1, 42, 1023} {
			b := make([]byte, sink.ERSPANHdrLen(v)+len(innerEth))
			sink.PutERSPAN(b, sink.ERSPANHeader{Version: v, Seq: 9, Session: id, COS: 7, Truncated: true, BSO: 3, Timestamp: 1})
			copy(b[sink.ERSPANHdrLen(v):], innerEth)
			f, err := DecodeKind(b, KindERSPAN)
			if err != nil || f.Kind != KindERSPAN || int(f.ERSPAN) != v || f.VNI != uint32(id) || !bytes.Equal(f.Inner, innerEth) || f.EtherType != 0 {
				t.Fatalf("v%d id %d: %+v %v", v, id, f, err)
			}
		}
	}
}

func TestDecodeERSPANBytes(t *testing.T) {
	// Type I: GRE without a sequence number, protocol 0x88be, no ERSPAN header.
	t1 := append([]byte{0, 0, 0x88, 0xbe}, innerEth...)
	if f, err := DecodeERSPAN(t1); err != nil || f.ERSPAN != 1 || f.VNI != 0 || !bytes.Equal(f.Inner, innerEth) {
		t.Fatalf("type I: %+v %v", f, err)
	}
	// Type II with a GRE key and checksum (flags C, K, S): 16-byte GRE header.
	t2 := append([]byte{0xb0, 0, 0x88, 0xbe, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1,
		0x10, 0x05, 0x03, 0xff, 0, 0, 0, 0}, innerEth...)
	if f, err := DecodeERSPAN(t2); err != nil || f.ERSPAN != 2 || f.VNI != 1023 || !bytes.Equal(f.Inner, innerEth) {
		t.Fatalf("type II: %+v %v", f, err)
	}
	// Type III with the platform-specific subheader (O) and FT IP.
	ip := []byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}
	t3 := append([]byte{0x10, 0, 0x22, 0xeb, 0, 0, 0, 1,
		0x20, 0x00, 0x00, 0x07, 1, 2, 3, 4, 0, 0, 0x08, 0x01, // FT 2 (IP), O
		0x0c, 0, 0, 0, 0, 0, 0, 0}, ip...)
	if f, err := DecodeERSPAN(t3); err != nil || f.ERSPAN != 3 || f.VNI != 7 || f.EtherType != etherTypeIPv4 || !bytes.Equal(f.Inner, ip) {
		t.Fatalf("type III IP: %+v %v", f, err)
	}
	bad := map[string]struct {
		b    []byte
		want error
	}{
		"short":       {[]byte{0x10, 0}, ErrGREShort},
		"gre short":   {[]byte{0x10, 0, 0x88, 0xbe, 0, 0}, ErrGREShort},
		"gre version": {[]byte{0x10, 1, 0x88, 0xbe, 0, 0, 0, 1}, ErrGREVersion},
		"not erspan":  {[]byte{0, 0, 0x08, 0x00, 0, 0, 0, 1}, ErrGREProto},
		"v2 short":    {[]byte{0x10, 0, 0x88, 0xbe, 0, 0, 0, 1, 0x10, 0}, ErrERSPANShort},
		"v2 ver":      {append([]byte{0x10, 0, 0x88, 0xbe, 0, 0, 0, 1, 0x20, 0, 0, 1, 0, 0, 0, 0}, innerEth...), ErrERSPANVer},
		"v3 ver":      {append([]byte{0x10, 0, 0x22, 0xeb, 0, 0, 0, 1, 0x10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x80, 0}, innerEth...), ErrERSPANVer},
		"v3 o short":  {[]byte{0x10, 0, 0x22, 0xeb, 0, 0, 0, 1, 0x20, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x80, 1, 0}, ErrERSPANShort},
		"v3 ft":       {append([]byte{0x10, 0, 0x22, 0xeb, 0, 0, 0, 1, 0x20, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x04, 0}, innerEth...), ErrERSPANFrame},
		"inner short": {append([]byte{0x10, 0, 0x88, 0xbe, 0, 0, 0, 1, 0x10, 0, 0, 1, 0, 0, 0, 0}, innerEth[:13]...), ErrInnerShort},
	}
	for name, c := range bad {
		if _, err := DecodeERSPAN(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if stripIPv4([]byte{0x45, 0, 0, 20}) != nil || len(stripIPv4(append(make([]byte, 0, 24), 0x46, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9))) != 1 {
		t.Fatal("stripIPv4")
	}
}

func TestValidateERSPAN(t *testing.T) {
	if err := Validate(Config{Listen: "10.77.4.2", Kind: KindERSPAN, AllowAny: true, PcapPath: "x", Sessions: []uint32{1, 1023}}); err != nil {
		t.Fatal(err)
	}
	for want, c := range map[string]Config{
		"without a port":     {Listen: "10.77.4.2:4789", Kind: KindERSPAN, AllowAny: true, PcapPath: "x"},
		"--session is for":   {Listen: "127.0.0.1:4789", PcapPath: "x", Sessions: []uint32{1}},
		"10 bits":            {Listen: "127.0.0.1", Kind: KindERSPAN, PcapPath: "x", Sessions: []uint32{1024}},
		"chosen with":        {Listen: "127.0.0.1", Kind: KindERSPAN, PcapPath: "x", VNIs: []uint32{1}},
		"reachable from oth": {Listen: "0.0.0.0", Kind: KindERSPAN, PcapPath: "x"},
	} {
		if err := Validate(c); err == nil || !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("%+v: %v (want %q)", c, err, want)
		}
	}
}

// --dedup: the same packet from two senders (different tunnels, Ethernet
// addresses, a VLAN tag on one, the TTL one lower on the other) is written
// once within the window, again after it.
func TestCollectorDedup(t *testing.T) {
	var buf bytes.Buffer
	w, err := pcapfile.Open(pcapfile.Config{Writer: &buf, LinkType: sink.LinkTypeEthernet})
	if err != nil {
		t.Fatal(err)
	}
	c := &Collector{cfg: Config{Kind: KindAuto}, allowAll: true, pcap: w,
		dedup: dedup.NewTable(50 * time.Millisecond), seed: maphash.MakeSeed()}
	ip := ipv4(t, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, 17, make([]byte, 30))
	eth := append([]byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0}, ip...)
	ip2 := append([]byte(nil), ip...)
	ip2[8]--
	ip2[10], ip2[11] = 0, 0
	copy(ip2[10:12], []byte{byte(sink.IPv4Checksum(ip2[:20]) >> 8), byte(sink.IPv4Checksum(ip2[:20]))})
	tagged := append([]byte{2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 8, 0x81, 0, 0, 100, 8, 0}, ip2...)
	vx := func(vni uint32, inner []byte) []byte {
		b := make([]byte, 8, 8+len(inner))
		sink.PutVXLAN(b, vni)
		return append(b, inner...)
	}
	t0 := time.Unix(1700000000, 0)
	c.Handle(t0, fuzzFrom, vx(1, eth))
	c.Handle(t0.Add(time.Millisecond), fuzzFrom, vx(2, tagged))
	g := append([]byte{0, 0, 0x08, 0x00, 0, 0, 3, 0}, ip...) // GENEVE carrying the bare IP packet
	c.Handle(t0.Add(2*time.Millisecond), fuzzFrom, g)
	c.Handle(t0.Add(100*time.Millisecond), fuzzFrom, vx(1, eth))
	if s := c.Stats(); s.Written != 2 || s.Duplicates != 2 {
		t.Fatalf("%+v", s)
	}
}
