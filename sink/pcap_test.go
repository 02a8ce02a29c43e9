package sink

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/nfclone/nfclone/internal/pcaptest"
	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pcapfile"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// icmp4 and udp/v6 packets with valid checksums for tshark.
func icmp4Echo() []byte {
	b := make([]byte, 28)
	b[0] = 0x45
	b[3] = 28
	b[8], b[9] = 64, 1
	copy(b[12:16], []byte{10, 77, 9, 1})
	copy(b[16:20], []byte{10, 77, 9, 2})
	b[10], b[11] = byte(IPv4Checksum(b[:20])>>8), byte(IPv4Checksum(b[:20]))
	b[20] = 8 // echo request
	c := IPv4Checksum(b[20:])
	b[22], b[23] = byte(c>>8), byte(c)
	return b
}

func TestPcapRoundTrip(t *testing.T) {
	for _, format := range []string{"pcap", "pcapng"} {
		t.Run(format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x."+format)
			s, err := NewPcap(PcapConfig{Config: pcapfile.Config{Path: path, Format: format}})
			if err != nil {
				t.Fatal(err)
			}
			p4 := icmp4Echo()
			p6 := udp6(60, 64, 0x66)
			full := udp4(300, 1, 64, 0x44)
			tr := packet.New(full[:100]) // truncated: OrigLen 300
			batch := append(pkts(p4, p6), tr)
			if n, err := s.Send(batch); n != 3 || err != nil {
				t.Fatalf("send %d %v", n, err)
			}
			// Visible before Close: every Send flushes.
			lt, recs := pcaptest.ReadFile(t, path)
			if lt != layers.LinkTypeRaw || len(recs) != 3 {
				t.Fatalf("link type %v, %d records", lt, len(recs))
			}
			if !bytes.Equal(recs[0].Data, p4) || !bytes.Equal(recs[1].Data, p6) || !bytes.Equal(recs[2].Data, full[:100]) {
				t.Fatal("records differ")
			}
			if recs[2].OrigLen != 300 || recs[0].OrigLen != len(p4) {
				t.Fatalf("original lengths %d %d", recs[2].OrigLen, recs[0].OrigLen)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); st.Sent != 3 || st.Errors != 0 {
				t.Fatalf("stats %+v", st)
			}
			if _, err := exec.LookPath("tshark"); err != nil {
				t.Log("tshark not installed: skipping the tshark check")
				return
			}
			out, err := exec.Command("tshark", "-n", "-r", path, "-T", "fields", "-e", "frame.protocols").Output()
			if err != nil {
				t.Fatalf("tshark: %v\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 3 || !strings.Contains(lines[0], "ip:icmp") || !strings.Contains(lines[1], "ipv6:udp") ||
				!strings.Contains(lines[2], "ip:udp") {
				t.Fatalf("tshark decodes:\n%s", out)
			}
			for _, p := range batch {
				p.Release()
			}
		})
	}
}

func TestPcapEthernetAndStdoutWriter(t *testing.T) {
	var buf bytes.Buffer
	s, err := NewPcap(PcapConfig{Config: pcapfile.Config{Writer: &buf, LinkType: LinkTypeEthernet, Snaplen: 50}})
	if err != nil {
		t.Fatal(err)
	}
	p6 := udp6(80, 64, 1)
	batch := pkts(p6)
	if n, err := s.Send(batch); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	lt, recs := pcaptest.Read(t, bytes.NewReader(buf.Bytes()))
	if lt != layers.LinkTypeEthernet || len(recs) != 1 {
		t.Fatalf("%v %d", lt, len(recs))
	}
	r := recs[0]
	if len(r.Data) != 50 || r.OrigLen != 94 || r.Data[12] != 0x86 || r.Data[13] != 0xdd || !bytes.Equal(r.Data[14:], p6[:36]) {
		t.Fatalf("record %x orig %d", r.Data, r.OrigLen)
	}
	if _, err := NewPcap(PcapConfig{Config: pcapfile.Config{Path: "x", LinkType: layers.LinkTypeLinuxSLL}}); err == nil {
		t.Fatal("link type accepted")
	}
}

func TestPcapUnwritablePath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "dir", "x.pcap")
	_, err := NewPcap(PcapConfig{Config: pcapfile.Config{Path: path}})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v does not name %s", err, path)
	}
	if _, err := pcapfile.Open(pcapfile.Config{Path: "x", Format: "erf"}); err == nil {
		t.Fatal("format accepted")
	}
}

func TestPcapRotation(t *testing.T) {
	for _, keep := range []int{0, 2} {
		t.Run(fmt.Sprintf("keep=%d", keep), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "r.pcap")
			// Header 24 + records of 16+100: 3 records fit in 400 bytes.
			w, err := pcapfile.Open(pcapfile.Config{Path: path, RotateSize: 400, RotateKeep: keep})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				if err := w.WritePacket(time.Now(), udp4(100, uint16(i), 64, byte(i)), 100); err != nil {
					t.Fatal(err)
				}
				if err := w.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if w.Count() != 10 {
				t.Fatalf("count %d", w.Count())
			}
			// 10 records: files of 3,3,3,1; the current file holds record 9.
			_, cur := pcaptest.ReadFile(t, path)
			if len(cur) != 1 || cur[0].Data[len(cur[0].Data)-1] != 9 {
				t.Fatalf("current file: %d records", len(cur))
			}
			kept := max(keep, 1) // a file is never emptied in place: keep 0 keeps one
			for i := 1; i <= kept; i++ {
				st, err := os.Stat(fmt.Sprintf("%s.%d", path, i))
				if err != nil {
					t.Fatal(err)
				}
				if st.Size() != 24+3*116 || st.Size() > 400 {
					t.Fatalf("%s.%d: %d bytes", path, i, st.Size())
				}
				_, recs := pcaptest.ReadFile(t, fmt.Sprintf("%s.%d", path, i))
				// .1 has records 6-8, .2 has 3-5.
				if first := recs[0].Data[len(recs[0].Data)-1]; int(first) != 9-3*i {
					t.Fatalf(".%d starts with record %d", i, first)
				}
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != kept+1 {
				t.Fatalf("%d files, want %d", len(ents), kept+1)
			}
		})
	}
}

// failWriter fails after limit bytes, writing what fits (like a full disk).
type failWriter struct {
	buf   bytes.Buffer
	limit int
	err   error
}

func (f *failWriter) Write(b []byte) (int, error) {
	room := f.limit - f.buf.Len()
	if room >= len(b) {
		return f.buf.Write(b)
	}
	if room < 0 {
		room = 0
	}
	f.buf.Write(b[:room])
	return room, f.err
}

func TestPcapStreamWriteErrorStaysWellFormed(t *testing.T) {
	fw := &failWriter{limit: 24 + 116 + 50, err: syscall.ENOSPC}
	s, err := NewPcap(PcapConfig{Name: "p", Config: pcapfile.Config{Writer: fw}})
	if err != nil {
		t.Fatal(err)
	}
	batch := pkts(udp4(100, 1, 64, 1), udp4(100, 2, 64, 2), udp4(100, 3, 64, 3))
	n, err := s.Send(batch)
	// Record 1 written, record 2 cut (its rest is written later), record
	// 3 dropped.
	if !errors.Is(err, syscall.ENOSPC) || n != 2 || batch[2].Errs != 1 || batch[0].Errs != 0 {
		t.Fatalf("send %d %v errs %d %d %d", n, err, batch[0].Errs, batch[1].Errs, batch[2].Errs)
	}
	if st := s.Stats(); st.Errors != 1 {
		t.Fatalf("stats %+v", st)
	}
	fw.limit = 1 << 20 // space again
	b2 := pkts(udp4(100, 4, 64, 4))
	if n, err := s.Send(b2); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	_, recs := pcaptest.Read(t, bytes.NewReader(fw.buf.Bytes()))
	if len(recs) != 3 || recs[1].Data[99] != 2 || recs[2].Data[99] != 4 {
		t.Fatalf("%d records after recovery", len(recs))
	}
}

// pcapFile under a tmpfs of 64 KiB: ENOSPC for real. The file keeps only
// complete records; copies are counted as errors; freeing space lets the
// capture resume.
func TestRootPcapENOSPC(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "none", dir).CombinedOutput(); err != nil {
		if os.Getenv("NFCLONE_E2E") == "1" {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	filler := filepath.Join(dir, "filler")
	path := filepath.Join(dir, "full.pcap")
	if err := os.WriteFile(filler, make([]byte, 16<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := NewPcap(PcapConfig{Config: pcapfile.Config{Path: path}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	batch := pkts(udp4(1000, 1, 64, 1), udp4(1000, 2, 64, 2), udp4(1000, 3, 64, 3), udp4(1000, 4, 64, 4))
	var failed error
	for range 40 {
		if _, err := s.Send(batch); err != nil {
			failed = err
			break
		}
	}
	if !errors.Is(failed, unix.ENOSPC) {
		t.Fatalf("no ENOSPC: %v", failed)
	}
	st := s.Stats()
	if st.Errors == 0 {
		t.Fatalf("stats %+v", st)
	}
	_, recs := pcaptest.ReadFile(t, path)
	if uint64(len(recs)) != st.Sent {
		t.Fatalf("%d records in the file, %d sent", len(recs), st.Sent)
	}
	// More attempts: counted, the file stays well-formed.
	for range 3 {
		s.Send(batch)
	}
	_, recs = pcaptest.ReadFile(t, path)
	if uint64(len(recs)) != s.Stats().Sent {
		t.Fatal("file not well-formed after repeated ENOSPC")
	}
	// Free space: the capture resumes where the file ends.
	t.Logf("after ENOSPC: %+v", s.Stats())
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	before := s.Stats().Sent
	if n, err := s.Send(batch); n != len(batch) || err != nil {
		t.Fatalf("after freeing space: %d %v", n, err)
	}
	_, recs = pcaptest.ReadFile(t, path)
	if uint64(len(recs)) != before+uint64(len(batch)) {
		t.Fatalf("%d records, want %d", len(recs), before+uint64(len(batch)))
	}
	for _, p := range batch {
		p.Release()
	}
}
