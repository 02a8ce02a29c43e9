package lab

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Unit tests: no root, no namespaces.

// ipv4Echo is a 28-byte IPv4 ICMP echo request 10.77.1.2 -> 10.77.2.2, TTL 64, seq 1.
var ipv4Echo = []byte{
	0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00,
	10, 77, 1, 2, 10, 77, 2, 2,
	0x08, 0x00, 0xf7, 0xfe, 0x00, 0x01, 0x00, 0x01,
}

func ethFrame(ethertype uint16, vlans int, payload []byte) []byte {
	f := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	for i := 0; i < vlans; i++ {
		f = append(f, 0x81, 0x00, 0x00, byte(10+i))
	}
	f = binary.BigEndian.AppendUint16(f, ethertype)
	return append(f, payload...)
}

func TestReadPcapClassicLinkTypes(t *testing.T) {
	sll := make([]byte, 16)
	binary.BigEndian.PutUint16(sll[14:], 0x0800)
	sll2 := make([]byte, 20)
	binary.BigEndian.PutUint16(sll2[0:], 0x0800)
	cases := []struct {
		name     string
		linkType int
		frame    []byte
		wantIP   bool
	}{
		{"ethernet", LinkTypeEthernet, ethFrame(0x0800, 0, ipv4Echo), true},
		{"ethernet-vlan", LinkTypeEthernet, ethFrame(0x0800, 1, ipv4Echo), true},
		{"ethernet-qinq", LinkTypeEthernet, ethFrame(0x0800, 2, ipv4Echo), true},
		{"ethernet-arp", LinkTypeEthernet, ethFrame(0x0806, 0, make([]byte, 28)), false},
		{"sll", LinkTypeLinuxSLL, append(sll, ipv4Echo...), true},
		{"sll2", LinkTypeSLL2, append(sll2, ipv4Echo...), true},
		{"raw", LinkTypeRaw, ipv4Echo, true},
		{"ipv4", LinkTypeIPv4, ipv4Echo, true},
		{"null", LinkTypeNull, append([]byte{2, 0, 0, 0}, ipv4Echo...), true},
		{"unknown", 147, ipv4Echo, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			ts := time.Unix(1700000000, 123456000)
			if err := WritePcap(&buf, c.linkType, []Record{{Time: ts, Data: c.frame}, {Time: ts, Data: c.frame, OrigLen: 1500}}); err != nil {
				t.Fatal(err)
			}
			recs, err := ReadPcap(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 2 {
				t.Fatalf("%d records", len(recs))
			}
			r := recs[0]
			if r.LinkType != c.linkType || !bytes.Equal(r.Data, c.frame) || r.OrigLen != len(c.frame) || !r.Time.Equal(ts) {
				t.Fatalf("record %+v", r)
			}
			if recs[1].OrigLen != 1500 {
				t.Fatalf("orig len %d", recs[1].OrigLen)
			}
			ip, ok := r.IP()
			if ok != c.wantIP {
				t.Fatalf("IP ok = %v, want %v", ok, c.wantIP)
			}
			if ok && !bytes.Equal(ip, ipv4Echo) {
				t.Fatalf("IP bytes % x", ip)
			}
		})
	}
}

func TestReadPcapBigEndianNanoAndTruncated(t *testing.T) {
	b := make([]byte, 24)
	binary.BigEndian.PutUint32(b[0:], 0xa1b23c4d) // nanosecond magic, big endian
	binary.BigEndian.PutUint16(b[4:], 2)
	binary.BigEndian.PutUint16(b[6:], 4)
	binary.BigEndian.PutUint32(b[16:], 65535)
	binary.BigEndian.PutUint32(b[20:], LinkTypeRaw)
	rh := make([]byte, 16)
	binary.BigEndian.PutUint32(rh[0:], 10)
	binary.BigEndian.PutUint32(rh[4:], 999999999)
	binary.BigEndian.PutUint32(rh[8:], uint32(len(ipv4Echo)))
	binary.BigEndian.PutUint32(rh[12:], uint32(len(ipv4Echo)))
	b = append(append(b, rh...), ipv4Echo...)
	recs, err := ReadPcap(b)
	if err != nil || len(recs) != 1 {
		t.Fatalf("recs %d err %v", len(recs), err)
	}
	if want := time.Unix(10, 999999999); !recs[0].Time.Equal(want) {
		t.Fatalf("time %v want %v", recs[0].Time, want)
	}
	// a second record cut in the middle, as in a file tcpdump is still writing
	b = append(append(b, rh...), ipv4Echo[:10]...)
	recs, err = ReadPcap(b)
	if !errors.Is(err, ErrTruncated) || len(recs) != 1 {
		t.Fatalf("truncated: recs %d err %v", len(recs), err)
	}
	if _, err := ReadPcap([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24}); err == nil {
		t.Fatal("bad magic accepted")
	}
}

func pcapngBlock(typ uint32, body []byte) []byte {
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	n := uint32(12 + len(body))
	b := binary.LittleEndian.AppendUint32(nil, typ)
	b = binary.LittleEndian.AppendUint32(b, n)
	b = append(b, body...)
	return binary.LittleEndian.AppendUint32(b, n)
}

func TestReadPcapng(t *testing.T) {
	shb := binary.LittleEndian.AppendUint32(nil, 0x1a2b3c4d)
	shb = append(shb, 1, 0, 0, 0)                                     // version 1.0
	shb = append(shb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff) // section length unknown
	idb := []byte{1, 0, 0, 0, 0, 0, 4, 0}                             // Ethernet, snaplen 262144
	idb = append(idb, 9, 0, 1, 0, 9, 0, 0, 0)                         // if_tsresol = 10^-9
	idb = append(idb, 0, 0, 0, 0)                                     // opt_endofopt
	frame := ethFrame(0x0800, 0, ipv4Echo)
	ts := uint64(1700000000123456789)
	epb := binary.LittleEndian.AppendUint32(nil, 0)
	epb = binary.LittleEndian.AppendUint32(epb, uint32(ts>>32))
	epb = binary.LittleEndian.AppendUint32(epb, uint32(ts))
	epb = binary.LittleEndian.AppendUint32(epb, uint32(len(frame)))
	epb = binary.LittleEndian.AppendUint32(epb, uint32(len(frame)))
	epb = append(epb, frame...)
	var file []byte
	file = append(file, pcapngBlock(0x0a0d0d0a, shb)...)
	file = append(file, pcapngBlock(1, idb)...)
	file = append(file, pcapngBlock(5, make([]byte, 8))...) // interface statistics: skipped
	file = append(file, pcapngBlock(6, epb)...)
	recs, err := ReadPcap(file)
	if err != nil || len(recs) != 1 {
		t.Fatalf("recs %d err %v", len(recs), err)
	}
	if got := recs[0].Time.UnixNano(); got != int64(ts) {
		t.Fatalf("time %d want %d", got, ts)
	}
	ip, ok := recs[0].IP()
	if !ok || !bytes.Equal(ip, ipv4Echo) || recs[0].LinkType != LinkTypeEthernet {
		t.Fatalf("record %+v", recs[0])
	}
}

func TestParsePingSummary(t *testing.T) {
	cases := []struct {
		out               string
		sent, recv, dupes int
		err               bool
	}{
		{"PING 10.77.2.2 (10.77.2.2) 56(84) bytes of data.\n64 bytes from 10.77.2.2: icmp_seq=1 ttl=63 time=0.1 ms\n\n--- 10.77.2.2 ping statistics ---\n5 packets transmitted, 5 received, 0% packet loss, time 4005ms\nrtt min/avg/max/mdev = 0.050/0.070/0.100/0.010 ms\n", 5, 5, 0, false},
		{"--- x ping statistics ---\n5 packets transmitted, 5 received, +5 duplicates, 0% packet loss, time 816ms\n", 5, 5, 5, false},
		{"--- x ping statistics ---\n3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2030ms\n", 3, 0, 0, false},
		{"--- x ping statistics ---\n4 packets transmitted, 2 received, +1 duplicate, 50% packet loss\n", 4, 2, 1, false},
		{"--- x ping statistics ---\n3 packets transmitted, 3 packets received, 0% packet loss\n", 3, 3, 0, false}, // BusyBox
		{"ping: connect: Network is unreachable\n", 0, 0, 0, true},
	}
	for i, c := range cases {
		s, r, d, err := ParsePingSummary(c.out)
		if (err != nil) != c.err || s != c.sent || r != c.recv || d != c.dupes {
			t.Errorf("case %d: got %d/%d/%d err %v, want %d/%d/%d err %v", i, s, r, d, err, c.sent, c.recv, c.dupes, c.err)
		}
	}
}

func TestParseTsharkFields(t *testing.T) {
	fields := []string{"frame.number", "frame.len", "ip.src", "ip.dst", "ip.ttl", "_ws.col.Protocol", "icmp.type", "icmp.seq", "udp.dstport", "vxlan.vni"}
	out := "1\t98\t10.77.1.2\t10.77.2.2\t63\tICMP\t8\t1\t\t\n" +
		"2\t148\t10.77.2.1;10.77.1.2\t10.77.2.2;10.77.2.2\t64;63\tICMP\t0\t7\t4789\t42\n"
	pkts, err := parseTsharkFields(out, fields)
	if err != nil || len(pkts) != 2 {
		t.Fatalf("pkts %d err %v", len(pkts), err)
	}
	p := pkts[0]
	if p.Number != 1 || p.FrameLen != 98 || p.IPSrc != SrcIP || p.TTL != 63 || p.Protocol != "ICMP" ||
		!p.IsEchoRequest() || p.ICMPSeq != 1 || p.UDPDstPort != -1 || p.VXLANVNI != -1 || p.ICMPv6Type != -1 || p.IP6Src != "" {
		t.Fatalf("packet 1: %+v", p)
	}
	q := pkts[1]
	if q.IPSrc != EngE1IP || q.TTL != 64 || len(q.All("ip.src")) != 2 || q.All("ip.src")[1] != SrcIP ||
		q.VXLANVNI != 42 || q.UDPDstPort != 4789 || !q.IsEchoReply() {
		t.Fatalf("packet 2: %+v", q)
	}
	if _, err := parseTsharkFields("1\t2\n", fields); err == nil {
		t.Fatal("short line accepted")
	}
}

func TestInvalidFields(t *testing.T) {
	msg := "Running as user \"root\"...\ntshark: Some fields aren't valid:\n\tgeneve.vni\n\tfoo.bar\n"
	got := invalidFields(msg)
	if len(got) != 2 || got[0] != "geneve.vni" || got[1] != "foo.bar" {
		t.Fatalf("%q", got)
	}
	if w := without([]string{"a", "geneve.vni", "b"}, got); len(w) != 2 || w[1] != "b" {
		t.Fatalf("%q", w)
	}
}

// TestDecodePcapWithTshark feeds a hand-built pcap to the real tshark (no root needed).
func TestDecodePcapWithTshark(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed (scripts/deps.sh installs it)")
	}
	ip := append([]byte(nil), ipv4Echo...)
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip[:20]))
	path := filepath.Join(t.TempDir(), "x.pcap")
	var buf bytes.Buffer
	if err := WritePcap(&buf, LinkTypeEthernet, []Record{{Time: time.Unix(1, 0), Data: ethFrame(0x0800, 0, ip)}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	pkts, err := DecodePcap(path)
	if err != nil || len(pkts) != 1 {
		t.Fatalf("pkts %d err %v", len(pkts), err)
	}
	p := pkts[0]
	if p.IPSrc != SrcIP || p.IPDst != ColIP || p.TTL != 64 || p.ICMPType != 8 || p.ICMPSeq != 1 || p.FrameLen != 14+28 || p.Protocol != "ICMP" {
		t.Fatalf("%+v", p)
	}
}

func ipChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
