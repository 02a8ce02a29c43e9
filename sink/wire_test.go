package sink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/nfclone/nfclone/packet"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/nfclone/nfclone/gso"
	"github.com/nfclone/nfclone/pipeline"
)

// recSink records copies of what it is given and fails those fail says.
type recSink struct {
	got   [][]byte
	calls int
	fail  func(b []byte) bool
}

func (r *recSink) Name() string { return "rec" }
func (r *recSink) Close() error { return nil }
func (r *recSink) Send(batch []*packet.Packet) (int, error) {
	r.calls++
	sent := 0
	var err error
	for _, p := range batch {
		if r.fail != nil && r.fail(p.Data) {
			p.Errs++
			err = errors.New("refused")
			continue
		}
		r.got = append(r.got, append([]byte(nil), p.Data...))
		sent++
	}
	return sent, err
}

// tcpSuper builds an IPv4 TCP packet with payload n bytes long, its
// checksum in the partial form the kernel leaves for GSO packets.
func tcpSuper(t testing.TB, n int) []byte {
	t.Helper()
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 100, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
		SrcIP: []byte{10, 77, 1, 2}, DstIP: []byte{10, 77, 4, 2}}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 5201, Seq: 1000, Ack: 1, ACK: true, PSH: true, Window: 512}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// The partial form: the folded pseudo-header sum, not inverted.
	binary.BigEndian.PutUint16(b[36:38], gso.Fold(gso.PseudoHeaderSum4(b[12:16], b[16:20], 6, len(b)-20)))
	return b
}

func validTCP(t *testing.T, b []byte) *layers.TCP {
	t.Helper()
	pkt := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
	tl, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	il, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if tl == nil || il == nil {
		t.Fatalf("not IPv4/TCP: %v", pkt)
	}
	if gso.Checksum(b[:20], 0) != 0 {
		t.Errorf("bad IPv4 header checksum in %x", b[:20])
	}
	if gso.Checksum(b[20:], gso.PseudoHeaderSum4(b[12:16], b[16:20], 6, len(b)-20)) != 0 {
		t.Errorf("bad TCP checksum (seq %d)", tl.Seq)
	}
	return tl
}

// A 64 KiB super-packet leaves as MTU-sized segments with valid checksums
// whose payloads add up to the original's; the copy counts once.
func TestWireSegmentsSuperPackets(t *testing.T) {
	rec := &recSink{}
	w := NewWire(rec, 1500)
	super := tcpSuper(t, 60000)
	small := tcpSuper(t, 100)
	p1, p2 := packet.New(super), packet.New(small)
	p1.Offload, p2.Offload = gso.Known|gso.GSO|gso.CsumPartial, gso.Known|gso.CsumPartial
	defer p1.Release()
	defer p2.Release()
	sent, err := w.Send([]*packet.Packet{p1, p2})
	if err != nil || sent != 2 {
		t.Fatalf("sent %d, %v", sent, err)
	}
	if len(rec.got) != 43 { // ceil(60000/1460) + the small one
		t.Fatalf("%d packets reached the sink, want 43", len(rec.got))
	}
	var payload []byte
	for i, b := range rec.got[:42] {
		if len(b) > 1500 {
			t.Errorf("segment %d is %d bytes", i, len(b))
		}
		tl := validTCP(t, b)
		if want := uint32(1000 + len(payload)); tl.Seq != want {
			t.Errorf("segment %d seq %d, want %d", i, tl.Seq, want)
		}
		payload = append(payload, tl.Payload...)
	}
	if !bytes.Equal(payload, super[40:]) {
		t.Errorf("segments carry %d bytes, not the original's %d", len(payload), len(super)-40)
	}
	validTCP(t, rec.got[42])
	if st := w.WireStats(); st.Split != 1 || st.Segments != 42 || st.Checksums != 1 {
		t.Errorf("stats %+v", st)
	}
}

// One failed segment fails its copy (a send error), and a datagram that
// cannot be cut is too big; neither stops the rest of the batch.
func TestWireErrors(t *testing.T) {
	rec := &recSink{fail: func(b []byte) bool { return binary.BigEndian.Uint32(b[24:28]) == 1000+1460 }}
	w := NewWire(rec, 1500)
	udp := make([]byte, 3000) // IPv4 UDP with DF set, no GSO: cannot be cut
	udp[0], udp[6], udp[8], udp[9] = 0x45, 0x40, 64, 17
	binary.BigEndian.PutUint16(udp[2:4], 3000)
	batch := []*packet.Packet{packet.New(tcpSuper(t, 20000)), packet.New(udp), packet.New(tcpSuper(t, 200))}
	batch[0].Offload = gso.Known | gso.GSO
	sent, err := w.Send(batch)
	if sent != 1 || err == nil {
		t.Errorf("sent %d, err %v; want 1 and an error", sent, err)
	}
	if batch[0].Errs == 0 || batch[0].TooBig {
		t.Errorf("copy with a failed segment: errs %d too big %v", batch[0].Errs, batch[0].TooBig)
	}
	if !batch[1].TooBig {
		t.Error("a DF datagram over the MTU is not marked too big")
	}
	if batch[2].Errs != 0 || batch[2].TooBig {
		t.Error("the last copy failed too")
	}
	var led pipeline.Ledger
	led.AddReceived(3)
	led.Account(batch)
	s := led.Snapshot()
	if s.Copied != 1 || s.Drops.SendError != 1 || s.Drops.TooBig != 1 || !s.Balanced() {
		t.Errorf("ledger %+v", s)
	}
	for _, p := range batch {
		p.Release()
	}
}

// Cutting and sending a super-packet allocates nothing once warm.
func TestWireNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are counted without -race")
	}
	w := NewWire(nopSink{}, 1500)
	p := packet.New(tcpSuper(t, 64000))
	p.Offload = gso.Known | gso.GSO | gso.CsumPartial
	defer p.Release()
	batch := []*packet.Packet{p}
	w.Send(batch)
	if a := testing.AllocsPerRun(100, func() { w.Send(batch) }); a > 0 {
		t.Errorf("%.1f allocations per Send", a)
	}
}

type nopSink struct{}

func (nopSink) Name() string                         { return "nop" }
func (nopSink) Close() error                         { return nil }
func (nopSink) Send(b []*packet.Packet) (int, error) { return len(b), nil }

// BenchmarkWireTCP64K: one 64 KiB super-packet cut into 1500-byte segments
// with their checksums (the sink itself does nothing).
func BenchmarkWireTCP64K(b *testing.B) {
	w := NewWire(nopSink{}, 1500)
	p := packet.New(tcpSuper(b, 64000))
	p.Offload = gso.Known | gso.GSO | gso.CsumPartial
	defer p.Release()
	batch := []*packet.Packet{p}
	b.SetBytes(int64(len(p.Data)))
	b.ReportAllocs()
	for b.Loop() {
		w.Send(batch)
	}
}

// With a device target that takes a virtio-net header, a TCP super-packet
// goes out whole in one message: the header says TCPv4 GSO with the MSS of
// the MTU and where the checksum is, and the checksum field holds the
// partial form the kernel's segmentation expects; a small copy gets an
// empty header.
func TestWireHandsSuperPacketsToDevice(t *testing.T) {
	fs := &fakeSend{}
	d := newDevice("dev", 5, 7, net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, fs.fn, nil)
	d.vnet = true
	w := NewWire(NewFanout(d), 1500)
	super, small := tcpSuper(t, 30000), tcpSuper(t, 100)
	batch := pkts(super, small)
	defer func() {
		for _, p := range batch {
			p.Release()
		}
	}()
	if sent, err := w.Send(batch); sent != 2 || err != nil {
		t.Fatalf("sent %d, %v", sent, err)
	}
	if len(fs.got) != 2 {
		t.Fatalf("%d messages, want 2 (the super-packet whole)", len(fs.got))
	}
	h, f := fs.got[0][:gso.VirtioNetHdrLen], fs.got[0][gso.VirtioNetHdrLen:]
	ne := binary.NativeEndian
	if h[0] != 1 || h[1] != 1 || ne.Uint16(h[2:]) != 14+40 || ne.Uint16(h[4:]) != 1460 ||
		ne.Uint16(h[6:]) != 14+20 || ne.Uint16(h[8:]) != 16 {
		t.Errorf("virtio-net header % x: want needs-csum, TCPv4, hdr_len 54, gso_size 1460, csum 34+16", h)
	}
	ip := f[EthHdrLen:]
	if len(ip) != len(super) {
		t.Fatalf("frame carries %d bytes of IP, want the whole %d", len(ip), len(super))
	}
	if want := gso.Fold(gso.PseudoHeaderSum4(ip[12:16], ip[16:20], 6, len(ip)-20)); binary.BigEndian.Uint16(ip[36:38]) != want {
		t.Errorf("TCP checksum field %#04x, want the partial form %#04x", binary.BigEndian.Uint16(ip[36:38]), want)
	}
	if h := fs.got[1][:gso.VirtioNetHdrLen]; !bytes.Equal(h, make([]byte, gso.VirtioNetHdrLen)) {
		t.Errorf("small copy's header % x, want zeros", h)
	}
	validTCP(t, fs.got[1][gso.VirtioNetHdrLen+EthHdrLen:])
}
