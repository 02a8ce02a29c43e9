package sink

import (
	"fmt"
	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pcapfile"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
)

// Records carry the copy's time (the kernel's), at microsecond precision
// in pcap and nanosecond in pcapng, not the time of the write.
func TestPcapRecordsCopyTime(t *testing.T) {
	for _, format := range []string{"pcap", "pcapng"} {
		t.Run(format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t."+format)
			s, err := NewPcap(PcapConfig{Config: pcapfile.Config{Path: path, Format: format}})
			if err != nil {
				t.Fatal(err)
			}
			when := time.Date(2026, 12, 1, 18, 0, 0, 123456789, time.UTC)
			p := packet.Get(100)
			p.Data = p.Data[:copy(p.Data, udp4(100, 1, 64, 1))]
			p.OrigLen, p.Family, p.Time = len(p.Data), 4, when.UnixNano()
			if n, err := s.Send([]*packet.Packet{p}); n != 1 || err != nil {
				t.Fatalf("send: %d %v", n, err)
			}
			p.Release()
			s.Close()
			f, _ := os.Open(path)
			defer f.Close()
			var got time.Time
			if format == "pcap" {
				r, err := pcapgo.NewReader(f)
				if err != nil {
					t.Fatal(err)
				}
				_, ci, err := r.ReadPacketData()
				if err != nil {
					t.Fatal(err)
				}
				got = ci.Timestamp
				if want := when.Truncate(time.Microsecond); !got.Equal(want) {
					t.Fatalf("pcap time %v, want %v", got, want)
				}
				return
			}
			r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
			if err != nil {
				t.Fatal(err)
			}
			_, ci, err := r.ReadPacketData()
			if err != nil {
				t.Fatal(err)
			}
			if !ci.Timestamp.Equal(when) {
				t.Fatalf("pcapng time %v, want %v", ci.Timestamp, when)
			}
		})
	}
}

// An annotated pcapng: one interface block per source interface, each
// record on its interface with its direction and a comment naming the
// session, the rule and the direction (uid/gid for the host's own) —
// read back by tshark.
func TestPcapAnnotated(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark is not installed")
	}
	path := filepath.Join(t.TempDir(), "a.pcapng")
	s, err := NewPcap(PcapConfig{Config: pcapfile.Config{Path: path, Format: "pcapng"},
		Annotate: &PcapAnnotation{Session: "ids", Names: map[uint32]string{2: "e0", 4: "e2"}, In: "", Out: "e2", Rules: []int{100, 200}}})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(dir uint8, in, out uint32, rule uint8, uid bool) *packet.Packet {
		p := packet.Get(100)
		p.Data = p.Data[:copy(p.Data, udp4(100, 1, 64, 1))]
		p.OrigLen, p.Family, p.Dir, p.InIf, p.OutIf, p.Rule = len(p.Data), 4, dir, in, out, rule
		if uid {
			p.UID, p.GID, p.HasUID = 1000, 100, true
		}
		return p
	}
	batch := []*packet.Packet{
		mk(packet.DirIngress, 2, 0, 1, false), // log, ingress on e0, rule 100
		mk(packet.DirEgress, 0, 4, 2, true),   // log, egress on e2, rule 200, a local socket's
		mk(packet.DirEgress, 0, 0, 0, false),  // queue clone: egress, the only egress interface
		mk(packet.DirIngress, 0, 0, 0, false), // queue clone: ingress, several interfaces
		mk(packet.DirUnknown, 0, 0, 0, false), // nothing known
	}
	if n, err := s.Send(batch); n != len(batch) || err != nil {
		t.Fatalf("send: %d %v", n, err)
	}
	for _, p := range batch {
		p.Release()
	}
	s.Close()
	out, err := exec.Command("tshark", "-r", path, "-T", "fields", "-E", "separator=|",
		"-e", "frame.interface_name", "-e", "frame.comment", "-e", "frame.packet_flags_direction").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	want := []string{
		"e0|session=ids rule=100 dir=ingress|0x00000001",
		"e2|session=ids rule=200 dir=egress uid=1000 gid=100|0x00000002",
		"e2|session=ids dir=egress|0x00000002",
		"nfclone|session=ids dir=ingress|0x00000001",
		"nfclone|session=ids|",
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("tshark reads\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
