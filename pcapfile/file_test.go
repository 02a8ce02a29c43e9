package pcapfile

import (
	"fmt"
	"github.com/nfclone/nfclone/internal/pcaptest"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// record is an IPv4 header of n bytes whose last byte is marker.
func record(n int, marker byte) []byte {
	b := make([]byte, n)
	b[0] = 0x45
	b[2], b[3] = byte(n>>8), byte(n)
	b[n-1] = marker
	return b
}

func writeRecords(t *testing.T, cfg Config, first, n int) {
	t.Helper()
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := first; i < first+n; i++ {
		if err := w.WritePacket(time.Now(), record(100, byte(i)), 100); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func lastBytes(recs []pcaptest.Record) []int {
	var out []int
	for _, r := range recs {
		out = append(out, int(r.Data[len(r.Data)-1]))
	}
	return out
}

// tsharkCount is what tshark reads from a file (-1: no tshark here).
func tsharkCount(t *testing.T, path string) int {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		return -1
	}
	out, err := exec.Command("tshark", "-r", path, "-T", "fields", "-e", "frame.number").Output()
	if err != nil {
		t.Fatalf("tshark -r %s: %v: %s", path, err, out)
	}
	return len(strings.Fields(string(out)))
}

// A restart, or a reload that re-opens a target, appends to the file it
// left (issue: every restart cut a pcap target to its 24-byte header).
func TestPcapReopenAppends(t *testing.T) {
	for _, format := range []string{"pcap", "pcapng"} {
		t.Run(format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "a."+format)
			cfg := Config{Path: path, Format: format}
			writeRecords(t, cfg, 0, 3)
			writeRecords(t, cfg, 3, 2)
			_, recs := pcaptest.ReadFile(t, path)
			if got := fmt.Sprint(lastBytes(recs)); got != "[0 1 2 3 4]" {
				t.Fatalf("records after a re-open: %s, want [0 1 2 3 4]", got)
			}
			if n := tsharkCount(t, path); n >= 0 && n != 5 {
				t.Fatalf("tshark reads %d records, want 5", n)
			}
			if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
				t.Fatalf("%d files, want 1", len(ents))
			}
		})
	}
}

// A file records cannot be appended to (another snaplen or link type, a
// last record cut short, something else) is moved aside, whole.
func TestPcapReopenMovesAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.pcap")
	writeRecords(t, Config{Path: path}, 0, 3)
	before, _ := os.ReadFile(path)
	writeRecords(t, Config{Path: path, Snaplen: 128}, 3, 2)
	aside, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatalf("the old file was not moved aside: %v", err)
	}
	if string(aside) != string(before) {
		t.Fatal("the file moved aside changed")
	}
	_, recs := pcaptest.ReadFile(t, path)
	if got := fmt.Sprint(lastBytes(recs)); got != "[3 4]" {
		t.Fatalf("new file: %s", got)
	}
	// A last record cut short (a crash of another writer): moved aside too.
	cut := filepath.Join(dir, "c.pcap")
	writeRecords(t, Config{Path: cut}, 0, 2)
	b, _ := os.ReadFile(cut)
	os.WriteFile(cut, b[:len(b)-7], 0o644)
	writeRecords(t, Config{Path: cut}, 2, 1)
	if st, err := os.Stat(cut + ".1"); err != nil || st.Size() != int64(len(b)-7) {
		t.Fatalf("cut file not moved aside whole: %v", err)
	}
	// Not a capture at all.
	txt := filepath.Join(dir, "notes.pcap")
	os.WriteFile(txt, []byte("keep me\n"), 0o644)
	writeRecords(t, Config{Path: txt, Format: "pcapng"}, 0, 1)
	if b, _ := os.ReadFile(txt + ".1"); string(b) != "keep me\n" {
		t.Fatalf("text file: %q", b)
	}
}

// nfclone writes only regular files it owns: a symlink planted at the path
// (a local user in /tmp) is neither followed nor touched, nor is a file of
// another user.
func TestPcapRefusesForeignFiles(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("precious"), 0o644)
	link := filepath.Join(dir, "l.pcap")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{Path: link}); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("symlink: err = %v", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Fatal("the symlink's target was written")
	}
	if _, err := os.Lstat(link + ".1"); err == nil {
		t.Fatal("the symlink was moved")
	}
	if os.Geteuid() != 0 {
		return
	}
	other := filepath.Join(dir, "o.pcap")
	os.WriteFile(other, []byte("theirs"), 0o644)
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{Path: other}); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Fatalf("foreign file: err = %v", err)
	}
	if b, _ := os.ReadFile(other); string(b) != "theirs" {
		t.Fatal("another user's file was written")
	}
}

// rotate_every cuts files at multiples of the interval by the records'
// times, names them with strftime conversions (or shifts path.N without
// them), and works together with size rotation.
func TestPcapRotateEvery(t *testing.T) {
	base := time.Now().Truncate(10 * time.Second).Add(10 * time.Second) // an interval start
	times := []time.Duration{0, 3 * time.Second, 12 * time.Second, 19 * time.Second, 25 * time.Second}
	write := func(t *testing.T, cfg Config) {
		w, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range times {
			if err := w.WritePacket(base.Add(d), record(100, byte(i)), 100); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("strftime", func(t *testing.T) {
		dir := t.TempDir()
		write(t, Config{Path: filepath.Join(dir, "r-%H%M%S.pcap"), RotateEvery: 10 * time.Second})
		want := map[string]string{}
		for _, c := range []struct {
			at   time.Duration
			recs string
		}{{0, "[0 1]"}, {10 * time.Second, "[2 3]"}, {20 * time.Second, "[4]"}} {
			want["r-"+base.Add(c.at).Local().Format("150405")+".pcap"] = c.recs
		}
		ents, _ := os.ReadDir(dir)
		if len(ents) != len(want) {
			t.Fatalf("%d files, want %d: %v", len(ents), len(want), ents)
		}
		for name, recs := range want {
			_, got := pcaptest.ReadFile(t, filepath.Join(dir, name))
			if fmt.Sprint(lastBytes(got)) != recs {
				t.Fatalf("%s holds %v, want %s", name, lastBytes(got), recs)
			}
		}
	})
	t.Run("shift", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "r.pcap")
		write(t, Config{Path: p, RotateEvery: 10 * time.Second, RotateKeep: 5})
		for name, recs := range map[string]string{"r.pcap.2": "[0 1]", "r.pcap.1": "[2 3]", "r.pcap": "[4]"} {
			_, got := pcaptest.ReadFile(t, filepath.Join(dir, name))
			if fmt.Sprint(lastBytes(got)) != recs {
				t.Fatalf("%s holds %v, want %s", name, lastBytes(got), recs)
			}
		}
	})
	t.Run("with size", func(t *testing.T) {
		dir := t.TempDir()
		// Two records of 116 bytes after the 24-byte header do not fit in 200.
		write(t, Config{Path: filepath.Join(dir, "s-%H%M%S.pcap"), RotateEvery: 10 * time.Second, RotateSize: 200, RotateKeep: 3})
		first := "s-" + base.Local().Format("150405") + ".pcap"
		for name, recs := range map[string]string{first + ".1": "[0]", first: "[1]"} {
			_, got := pcaptest.ReadFile(t, filepath.Join(dir, name))
			if fmt.Sprint(lastBytes(got)) != recs {
				t.Fatalf("%s holds %v, want %s", name, lastBytes(got), recs)
			}
		}
	})
}

// /dev/null and a fifo are written as streams, as tcpdump -w does.
func TestPcapDevices(t *testing.T) {
	writeRecords(t, Config{Path: os.DevNull}, 0, 3)
	fifo := filepath.Join(t.TempDir(), "f")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// The reading end is opened first (not blocking): opened after the
	// writer closed, it would wait for a writer forever.
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	writeRecords(t, Config{Path: fifo}, 0, 2) // fits in the pipe's buffer
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := 24 + 2*116; len(b) != want {
		t.Fatalf("read %d bytes from the fifo, want %d", len(b), want)
	}
}
