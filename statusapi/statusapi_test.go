package statusapi

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/nfq"
	"github.com/nfclone/nfclone/pipeline"
	"github.com/nfclone/nfclone/sink"
	"github.com/nfclone/nfclone/status"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var started = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func fakeStatus() status.Status {
	return status.Status{
		PID:        4242,
		Version:    "v1.2.3",
		Started:    started,
		Config:     "/etc/nfclone/nfclone.yaml",
		Table:      "nfclone",
		Generation: 3,
		LastReload: &status.ReloadStatus{Time: started.Add(time.Hour), OK: false,
			Error: `sessions[0].targets[1].remote: "10.77.4.2" has no port`},
		Sessions: []status.SessionStatus{
			{
				Name:   "ids",
				Method: "queue",
				Hold:   true,
				State:  "running",
				Seen:   status.Counter{Packets: 1000, Bytes: 98000},
				Copied: status.Counter{Packets: 950, Bytes: 93100},
				Ledger: &pipeline.Snapshot{
					Offered: 1010, Received: 1000, Copied: 950, Bytes: 93100, InFlight: 5,
					Drops: pipeline.Drops{KernelQueue: 1, User: 2, SocketOverrun: 7, QueueOverflow: 30,
						Malformed: 4, SendError: 11},
					ENOBUFS: 2, VerdictErrors: 1,
				},
				Queue: &status.QueueStatus{Depth: 17, Cap: 8192, Workers: 2},
				Readers: []status.ReaderStatus{
					{Kind: "nfqueue", Num: 0, Running: true, Stats: nfq.ReaderStats{Datagrams: 40, Packets: 600}},
					{Kind: "nfqueue", Num: 1, Running: false, Stats: nfq.ReaderStats{Datagrams: 30, Packets: 400}},
				},
				Targets: []status.TargetStatus{
					{Name: "gateway 10.77.2.2 dev e1", Kind: "gateway", Stats: &sink.Stats{Sent: 955, Bytes: 93590, Errors: 6,
						LastError: "sendmmsg: network is unreachable"}},
					{Name: "device e3", Kind: "device", Stats: &sink.Stats{Sent: 961, Bytes: 3 << 30}},
				},
			},
			{
				Name:          "audit",
				Method:        "log",
				State:         "waiting",
				MissingRoutes: []string{"default via 10.77.2.2 dev e1 table 20036 (device e1 is down)"},
				Seen:          status.Counter{Packets: 20, Bytes: 2000},
				Copied:        status.Counter{Packets: 20, Bytes: 2000},
				Ledger:        &pipeline.Snapshot{Offered: 20, Received: 20, Copied: 20, Bytes: 2000},
				Queue:         &status.QueueStatus{Depth: 0, Cap: 8192, Workers: 1},
				Readers: []status.ReaderStatus{
					{Kind: "nflog", Num: 2, Running: true},
				},
				Targets: []status.TargetStatus{
					{Name: "pcap /var/lib/nfclone/audit.pcap", Kind: "pcap", Stats: &sink.Stats{Sent: 20, Bytes: 2000}},
					{Name: "audit/1:pcap-over-ip", Kind: "pcap-over-ip", Stats: &sink.Stats{Sent: 20, Bytes: 2000},
						Clients: []sink.PcapClientStats{{ID: 1, Remote: "10.77.2.2:40000", Sent: 12, Bytes: 1392, Dropped: 8}}},
				},
			},
			{
				Name:    "tap",
				Method:  "dup",
				State:   "waiting",
				Missing: []string{"e9"},
				Seen:    status.Counter{Packets: 77, Bytes: 7700},
				Copied:  status.Counter{Packets: 70, Bytes: 7000},
				Targets: []status.TargetStatus{{Name: "device e9", Kind: "device"}},
			},
		},
		Interfaces: []status.InterfaceStatus{
			{Name: "e0", Present: true, Index: 2, UsedBy: []string{"ids", "audit"}},
			{Name: "e9", Present: false, UsedBy: []string{"tap"}},
			{Name: "agg0", Present: true, Index: 7, UsedBy: []string{"tap"}, Created: true},
		},
		Drift: []string{"inet route default via 10.77.2.2 dev e1 table 20036: device e1 is down"},
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// shortDir returns a temporary directory with a short path (unix socket
// paths are limited to 107 bytes; t.TempDir can be longer).
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "nfcs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// waitGoroutines polls until the goroutine count is back to base.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("goroutines: %d, want <= %d\n%s", runtime.NumGoroutine(), base, buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serve starts Serve on dir and waits until the socket answers.
func serve(t *testing.T, ctx context.Context, dir string, src func() status.Status) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, dir, src, quiet()) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("unix", SocketPath(dir)); err == nil {
			c.Close()
			return done
		}
		select {
		case err := <-done:
			t.Fatalf("Serve returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("socket never answered")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServeFetch(t *testing.T) {
	base := runtime.NumGoroutine()
	parent := shortDir(t)
	dir := filepath.Join(parent, "state") // Serve creates it
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(t, ctx, dir, fakeStatus)

	fi, err := os.Stat(SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("state_dir mode %v, want 0700", di.Mode().Perm())
	}

	want := fakeStatus()
	for i := 0; i < 3; i++ {
		got, err := Fetch(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Fetch:\n got %+v\nwant %+v", got, want)
		}
	}

	// A second Serve on the same state_dir refuses to steal the socket.
	if err := Serve(context.Background(), dir, fakeStatus, quiet()); err == nil || !strings.Contains(err.Error(), "another nfclone") {
		t.Errorf("second Serve: %v", err)
	}

	// A client that connects and reads nothing does not block others.
	idle, err := net.Dial("unix", SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Fetch(context.Background(), dir); err != nil {
		t.Errorf("Fetch with an idle client: %v", err)
	}
	idle.Close()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := os.Lstat(SocketPath(dir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	waitGoroutines(t, base)

	_, err = Fetch(context.Background(), dir)
	if !errors.Is(err, ErrNotRunning) {
		t.Errorf("Fetch after stop: %v, want ErrNotRunning", err)
	}
}

func TestFetchNoDaemon(t *testing.T) {
	dir := shortDir(t)
	for _, d := range []string{dir, filepath.Join(dir, "nowhere")} {
		_, err := Fetch(context.Background(), d)
		if !errors.Is(err, ErrNotRunning) {
			t.Fatalf("Fetch(%s): %v, want ErrNotRunning", d, err)
		}
		msg := err.Error()
		for _, want := range []string{"no running nfclone found in " + d, "(socket " + SocketPath(d) + ")",
			"is it running?", "is state_dir the same?"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q lacks %q", msg, want)
			}
		}
	}

	// A stale socket (its daemon killed): same clear error.
	ln, err := net.Listen("unix", SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Fetch(context.Background(), dir); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Fetch on a stale socket: %v, want ErrNotRunning", err)
	}
}

func TestServeStaleSocket(t *testing.T) {
	base := runtime.NumGoroutine()
	dir := shortDir(t)
	ln, err := net.Listen("unix", SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := serve(t, ctx, dir, fakeStatus)
	if _, err := Fetch(context.Background(), dir); err != nil {
		t.Errorf("Fetch: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
	waitGoroutines(t, base)
}

func TestServeRefusesNonSocket(t *testing.T) {
	dir := shortDir(t)
	if err := os.WriteFile(SocketPath(dir), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Serve(context.Background(), dir, fakeStatus, quiet())
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Serve over a file: %v", err)
	}
	if b, _ := os.ReadFile(SocketPath(dir)); string(b) != "x" {
		t.Error("the file was touched")
	}
	long := filepath.Join(dir, strings.Repeat("d", 120))
	if err := Serve(context.Background(), long, fakeStatus, quiet()); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("Serve with a long path: %v", err)
	}
}

// TestServeKeepsReplacedSocket: when another process replaced the socket,
// Serve does not remove the new one on its way out.
func TestServeKeepsReplacedSocket(t *testing.T) {
	dir := shortDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(t, ctx, dir, fakeStatus)
	if err := os.Remove(SocketPath(dir)); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(SocketPath(dir)); err != nil {
		t.Errorf("the other socket was removed: %v", err)
	}
}

func TestFetchContext(t *testing.T) {
	// A server that accepts and never writes: Fetch gives up with ctx.
	dir := shortDir(t)
	ln, err := net.Listen("unix", SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			time.Sleep(2 * time.Second)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Fetch(ctx, dir)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Fetch: %v, want a deadline error", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Fetch took %v", d)
	}
}

func TestWriteTableGolden(t *testing.T) {
	now := started.Add(26*time.Hour + 3*time.Minute + 4*time.Second)
	cases := map[string]status.Status{
		"table.golden": fakeStatus(),
		"empty.golden": {PID: 7, Version: "dev", Started: now.Add(-90 * time.Second), Generation: 1, Table: "nfclone"},
	}
	for name, s := range cases {
		var buf bytes.Buffer
		if err := writeTable(&buf, s, now); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("testdata", name)
		if *update {
			if err := os.MkdirAll("testdata", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./statusapi -run Golden -update)", err)
		}
		if got := buf.String(); got != string(want) {
			t.Errorf("%s differs (go test ./statusapi -run Golden -update):\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
		}
	}

	// WriteTable itself (with the real clock) prints the same sections.
	var buf bytes.Buffer
	if err := WriteTable(&buf, fakeStatus()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pid 4242", "generation 3", "SESSION", "queue_overflow 30", "interfaces missing: e9"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("WriteTable lacks %q", want)
		}
	}
}

func TestBytesIEC(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		3 << 30: "3.0 GiB", 1 << 62: "4.0 EiB"} {
		if got := bytesIEC(n); got != want {
			t.Errorf("bytesIEC(%d) = %q, want %q", n, got, want)
		}
	}
}
