package sink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pcapfile"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestPutERSPANBytes(t *testing.T) {
	h := bytes.Repeat([]byte{0xee}, 16)
	PutERSPAN(h, ERSPANHeader{Version: 2, Seq: 0x01020304, Session: 0x2a5, COS: 5, Truncated: true})
	want := []byte{
		0x10, 0x00, // GRE flags: S
		0x88, 0xbe, // ERSPAN type II
		0x01, 0x02, 0x03, 0x04, // sequence number
		0x10, 0x00, // ver 1, vlan 0
		0xa6, 0xa5, // cos 5, en 0, t 1, session 0x2a5
		0x00, 0x00, 0x00, 0x00, // reserved, index 0
	}
	if !bytes.Equal(h, want) {
		t.Fatalf("type II %x want %x", h, want)
	}
	h = bytes.Repeat([]byte{0xee}, 20)
	PutERSPAN(h, ERSPANHeader{Version: 3, Seq: 7, Session: 1023, BSO: 1, Timestamp: 0xdeadbeef, Egress: true})
	want = []byte{
		0x10, 0x00, // GRE flags: S
		0x22, 0xeb, // ERSPAN type III
		0x00, 0x00, 0x00, 0x07, // sequence number
		0x20, 0x00, // ver 2, vlan 0
		0x0b, 0xff, // cos 0, bso 1, t 0, session 1023
		0xde, 0xad, 0xbe, 0xef, // timestamp
		0x00, 0x00, // SGT
		0x80, // P 1, FT 0, hw id 0
		0x08, // D 1, gra 00, O 0
	}
	if !bytes.Equal(h, want) {
		t.Fatalf("type III %x want %x", h, want)
	}
	if ERSPANHdrLen(2) != 16 || ERSPANHdrLen(3) != 20 {
		t.Fatal("header lengths")
	}
}

func fakeERSPAN(t testing.TB, version int, send sendmmsgFunc, remotes ...string) *ERSPAN {
	var rs []netip.Addr
	for _, r := range remotes {
		rs = append(rs, netip.MustParseAddr(r))
	}
	e, err := newERSPAN(ERSPANConfig{Remotes: rs, Version: version, Session: 42}, send)
	if err != nil {
		t.Fatal(err)
	}
	e.fds = [2]int{100, 200}
	e.now = func() time.Time { return time.Unix(1700000000, 123456789) }
	return e
}

func TestERSPANSend(t *testing.T) {
	for _, v := range []int{2, 3} {
		fs := &fakeSend{}
		e := fakeERSPAN(t, v, fs.fn, "10.77.4.2", "fd77:4::2")
		var datas [][]byte
		for i := range 20 {
			if i%4 == 0 {
				datas = append(datas, ipv6(100+i))
			} else {
				datas = append(datas, flowPkt4(i))
			}
		}
		batch := pkts(datas...)
		bad := packet.New([]byte{0x10, 1, 2})
		n, err := e.Send(append(batch, bad))
		if n != 20 || !errors.Is(err, errUnsendable) || bad.Errs != 1 {
			t.Fatalf("v%d: sent %d, %v, bad errs %d", v, n, err, bad.Errs)
		}
		if len(fs.got) != 20 {
			t.Fatalf("v%d: %d frames", v, len(fs.got))
		}
		hl := ERSPANHdrLen(v)
		seqs := map[uint32]bool{}
		for i, f := range fs.got {
			seq := binary.BigEndian.Uint32(f[4:8])
			seqs[seq] = true
			var orig []byte
			for _, d := range datas {
				if bytes.Equal(f[hl+EthHdrLen:], d) {
					orig = d
				}
			}
			if orig == nil {
				t.Fatalf("v%d: frame %d carries no copy: %x", v, i, f)
			}
			et := binary.BigEndian.Uint16(f[hl+12 : hl+14])
			if orig[0]>>4 == 6 {
				if et != unix.ETH_P_IPV6 {
					t.Fatalf("ethertype %#x", et)
				}
			} else if et != unix.ETH_P_IP {
				t.Fatalf("ethertype %#x", et)
			}
			// The remote is the flow's (either family carries either).
			if (fs.fds[i] == 100) != (len(fs.names[i]) == unix.SizeofSockaddrInet4) {
				t.Fatalf("v%d: frame %d on fd %d to a sockaddr of %d bytes", v, i, fs.fds[i], len(fs.names[i]))
			}
			if !bytes.Equal(f[hl:hl+12], []byte{2, 0x4e, 0x43, 0, 0, 2, 2, 0x4e, 0x43, 0, 0, 1}) {
				t.Fatalf("inner Ethernet addresses %x", f[hl:hl+12])
			}
			if got := binary.BigEndian.Uint16(f[10:12]) & 0x3ff; got != 42 {
				t.Fatalf("session %d", got)
			}
			if v == 3 && binary.BigEndian.Uint32(f[12:16]) != uint32(uint64(17000000001234)&0xffffffff) {
				t.Fatalf("timestamp %d", binary.BigEndian.Uint32(f[12:16]))
			}
		}
		if len(seqs) != 20 || !seqs[1] || !seqs[20] {
			t.Fatalf("sequence numbers %v", seqs)
		}
		if s := e.Stats(); s.Sent != 20 || s.Errors != 1 {
			t.Fatalf("%+v", s)
		}
		for _, p := range batch {
			p.Release()
		}
	}
	if _, err := newERSPAN(ERSPANConfig{Remotes: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Version: 1}, nil); err == nil {
		t.Fatal("version 1 accepted")
	}
	if _, err := newERSPAN(ERSPANConfig{Remotes: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Session: 1024}, nil); err == nil {
		t.Fatal("session 1024 accepted")
	}
}

// tshark decodes what the sink builds as ERSPAN type II and III: version,
// span id, sequence number, and the inner frame's IP header.
func TestERSPANTsharkDecodes(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed")
	}
	for _, v := range []int{2, 3} {
		fs := &fakeSend{}
		e := fakeERSPAN(t, v, fs.fn, "10.77.4.2")
		batch := pkts(ipv4(60, [4]byte{10, 77, 9, 9}))
		if n, err := e.Send(batch); n != 1 || err != nil {
			t.Fatal(n, err)
		}
		// The outer IPv4 header the kernel would add (protocol 47).
		outer := ipv4(20, [4]byte{10, 77, 4, 2})
		outer[9] = 47
		binary.BigEndian.PutUint16(outer[2:4], uint16(20+len(fs.got[0])))
		outer[10], outer[11] = 0, 0
		binary.BigEndian.PutUint16(outer[10:12], IPv4Checksum(outer))
		path := filepath.Join(t.TempDir(), "erspan.pcap")
		w, err := pcapfile.Open(pcapfile.Config{Path: path, LinkType: LinkTypeRaw})
		if err != nil {
			t.Fatal(err)
		}
		pkt := append(outer, fs.got[0]...)
		if err := w.WritePacket(time.Unix(1700000000, 0), pkt, len(pkt)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("tshark", "-r", path, "-n", "-T", "fields", "-E", "separator=|",
			"-e", "gre.proto", "-e", "gre.sequence_number", "-e", "erspan.version", "-e", "erspan.spanid",
			"-e", "erspan.ft", "-e", "eth.type", "-e", "ip.dst").Output()
		if err != nil {
			t.Fatal(err)
		}
		want := map[int]string{
			2: "0x88be|1|1|42||0x0800|10.77.4.2,10.77.9.9",
			3: "0x22eb|1|2|42|0|0x0800|10.77.4.2,10.77.9.9",
		}[v]
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("ERSPAN v%d: tshark decodes\n%s\nwant\n%s", v, got, want)
		}
		os.Remove(path)
		batch[0].Release()
	}
}

func TestERSPANNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	e := fakeERSPAN(t, 3, func(fd int, h []unix.Mmsghdr) (int, error) { return len(h), nil }, "10.77.4.2", "fd77:4::2")
	batch := pkts(ipv4(1500, [4]byte{10, 0, 0, 1}), ipv6(1500), flowPkt4(3))
	e.Send(batch)
	if n := testing.AllocsPerRun(100, func() { e.Send(batch) }); n != 0 {
		t.Fatalf("%v allocations per batch", n)
	}
}

func BenchmarkERSPANBuildBatch(b *testing.B) {
	e := fakeERSPAN(b, 3, func(fd int, h []unix.Mmsghdr) (int, error) { return len(h), nil }, "10.77.4.2")
	var datas [][]byte
	for i := range 64 {
		datas = append(datas, flowPkt4(i))
	}
	batch := pkts(datas...)
	for b.Loop() {
		e.Send(batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/copy")
}

// Type III carries the kernel's time of the packet and its direction.
func TestERSPAN3TimeAndDirection(t *testing.T) {
	fs := &fakeSend{}
	e := fakeERSPAN(t, 3, fs.fn, "10.77.4.2")
	batch := pkts(ipv4(60, [4]byte{10, 77, 2, 2}), ipv4(60, [4]byte{10, 77, 2, 3}))
	batch[0].Time, batch[0].Dir = time.Unix(1700000001, 0).UnixNano(), packet.DirEgress
	batch[1].Dir = packet.DirIngress
	if n, err := e.Send(batch); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	if ts := binary.BigEndian.Uint32(fs.got[0][12:16]); ts != uint32(uint64(17000000010000)&0xffffffff) || fs.got[0][19]&0x08 == 0 {
		t.Fatalf("egress copy: timestamp %d, flags %#x", ts, fs.got[0][19])
	}
	if ts := binary.BigEndian.Uint32(fs.got[1][12:16]); ts != uint32(uint64(17000000001234)&0xffffffff) || fs.got[1][19]&0x08 != 0 {
		t.Fatalf("ingress copy without a kernel time: timestamp %d, flags %#x", ts, fs.got[1][19])
	}
	for _, p := range batch {
		p.Release()
	}
}
