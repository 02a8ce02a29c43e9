package e2e

import (
	be "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// udpBurst sends n datagrams of size bytes to dst:port, about rate per
// second (python3, from the namespace it runs in).
const udpBurst = `
import socket, sys, time
dst, port, n, size, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic()
for i in range(n):
    s.sendto(i.to_bytes(4, 'big') + b'x' * (size - 4), (dst, port))
    if i % 100 == 99:
        ahead = (i + 1) / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
`

// A pcap-over-ip target with three clients on the collector: two read
// with `nc HOST PORT | tcpdump -r -` while the third's nc is stopped with
// SIGSTOP. 30 000 forwarded UDP datagrams (30 MB of copies, more than the
// stopped client's kernel and nfclone buffers hold): both readers get
// every copy the session made (tcpdump reads from each stream exactly the
// datagrams, by sequence number, of the session's pcap file target), the
// stopped client's stream, read after
// SIGCONT, is whole records and short by what nfclone counted dropped for
// it alone.
func TestPcapOverIPClients(t *testing.T) {
	lab.RequireTools(t, "nc", "/usr/bin/python3")
	l := lab.New(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "burst.py")
	if err := os.WriteFile(script, []byte(udpBurst), 0o644); err != nil {
		t.Fatal(err)
	}
	// The session's pcap file target gets every copy the session made:
	// the reference the readers are judged against (a copy the kernel
	// never handed over is no copy the stream could carry).
	ref := filepath.Join(dir, "ref.pcap")
	d := startNfclone(t, l, `
sessions:
  - name: poi
    method: log
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: udp, destination_ports: "5555"}]
    targets:
      - {kind: pcap-over-ip, listen: "10.77.2.1:57012", allow: [10.77.2.0/24]}
      - {kind: pcap, path: `+ref+`}
`)
	addr := []string{lab.EngE1IP, "57012"}
	var readers []*lab.Proc
	var files []string
	for i := range 2 {
		f := filepath.Join(dir, fmt.Sprintf("client%d.pcap", i))
		files = append(files, f)
		readers = append(readers, l.Start(t, l.Col, "sh", "-c",
			fmt.Sprintf("nc -d %s %s | tcpdump -n -r - -w %s", addr[0], addr[1], f)))
	}
	stopped := l.Start(t, l.Col, "nc", "-d", addr[0], addr[1])
	// Connected (the kernel's view), then accepted (nfclone's: a
	// connection the kernel completed may wait in the accept queue).
	lab.WaitFor(t, 10*time.Second, func() bool {
		out, err := l.Exec(t.Context(), l.Eng, "ss", "-Htn", "state", "established", "( sport = :57012 )")
		return err == nil && len(strings.Fields(string(out))) > 0 && strings.Count(strings.TrimSpace(string(out)), "\n")+1 == 3
	}, "three pcap-over-ip clients connected (ss)")
	lab.WaitFor(t, 10*time.Second, func() bool {
		out, _, code := nfc(l, "status", "--state-dir", d.stateDir, "--json")
		return code == 0 && strings.Count(out, `"remote":`) == 3
	}, "nfclone to have accepted the three clients")
	if err := stopped.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	const n = 30000
	l.MustExec(t, l.Src, "/usr/bin/python3", script, lab.Src2IP, "5555", strconv.Itoa(n), "1000", "10000")
	// nfclone's own view of the clients, for the log (the verdict below is
	// tcpdump's).
	var dropped, lastSent uint64
	var last string
	defer func() {
		if t.Failed() {
			t.Logf("last status:\n%s", last)
		}
	}()
	lab.WaitFor(t, 10*time.Second, func() bool {
		out, _, code := nfc(l, "status", "--state-dir", d.stateDir, "--json")
		last = out
		if code != 0 {
			return false
		}
		var st struct {
			Sessions []struct {
				Targets []struct {
					Stats struct {
						Sent uint64 `json:"sent"`
					} `json:"stats"`
					Clients []struct {
						Sent, Dropped uint64
					} `json:"clients"`
				} `json:"targets"`
			} `json:"sessions"`
		}
		if json.Unmarshal([]byte(out), &st) != nil || len(st.Sessions) != 1 || len(st.Sessions[0].Targets) != 2 {
			return false
		}
		var total uint64
		dropped = 0
		tg := st.Sessions[0].Targets[0]
		for _, c := range tg.Clients {
			total += c.Sent + c.Dropped
			dropped += c.Dropped
		}
		settled := tg.Stats.Sent > 0 && tg.Stats.Sent == lastSent && total == 3*tg.Stats.Sent
		lastSent = tg.Stats.Sent
		return settled
	}, "the copies settled: each streamed or dropped for each client")
	d.stop(t) // closes the connections: the readers' nc and tcpdump end
	// seqs returns the datagrams' numbers (the sender's first 4 bytes of
	// the UDP payload; IPv4 without options: offset 28), each once.
	seqs := func(what string, recs []lab.Record) map[uint32]bool {
		m := map[uint32]bool{}
		for j, r := range recs {
			if len(r.Data) < 32 {
				t.Fatalf("%s: record %d is %d bytes", what, j, len(r.Data))
			}
			k := be.BigEndian.Uint32(r.Data[28:32])
			if k >= n || m[k] {
				t.Fatalf("%s: record %d carries datagram %d twice or out of range", what, j, k)
			}
			m[k] = true
		}
		return m
	}
	refRecs, err := lab.ReadPcapFile(ref)
	if err != nil {
		t.Fatal(err)
	}
	want := seqs("the session's pcap file", refRecs)
	if len(want) < n*9/10 {
		t.Fatalf("the session copied %d of %d datagrams: too few to judge the stream", len(want), n)
	}
	for i, r := range readers {
		if code, err := r.Wait(15 * time.Second); code != 0 || err != nil {
			t.Fatalf("reader %d: exit %d %v:\n%s", i, code, err, r.Stderr())
		}
		recs, err := lab.ReadPcapFile(files[i])
		if err != nil {
			t.Fatalf("reader %d: %v", i, err)
		}
		got := seqs(fmt.Sprintf("reader %d", i), recs)
		if len(recs) != len(want) {
			t.Fatalf("reader %d's tcpdump read %d packets from the stream, the session copied %d (a stopped client held it back?)", i, len(recs), len(want))
		}
		for k := range want {
			if !got[k] {
				t.Fatalf("reader %d lacks datagram %d", i, k)
			}
		}
		td := l.MustExec(t, "", "tcpdump", "-nr", files[i], "-c", "1")
		if !strings.Contains(td, lab.SrcIP) || !strings.Contains(td, lab.Src2IP+".5555: UDP, length 1000") {
			t.Fatalf("reader %d: tcpdump shows %q", i, td)
		}
	}
	if err := stopped.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if _, err := stopped.Wait(15 * time.Second); err != nil {
		t.Fatalf("stopped client after SIGCONT: %v", err)
	}
	// Its connection was closed at exit in the middle of a write it was
	// not reading: the last record may be cut, the ones before are whole.
	recs, err := lab.ReadPcap([]byte(stopped.Stdout()))
	if err != nil && !errors.Is(err, lab.ErrTruncated) {
		t.Fatalf("the stopped client's stream is not whole records: %v", err)
	}
	if len(recs) == 0 || len(recs) >= len(want) || dropped == 0 || uint64(len(recs))+dropped > uint64(len(want)) {
		t.Fatalf("stopped client got %d records and nfclone counted %d dropped for it, want some, less than %d, adding up to at most %d", len(recs), dropped, len(want), len(want))
	}
	t.Logf("copied %d of %d datagrams; each reader got all %d; stopped client: %d received, %d dropped for it", len(want), n, len(want), len(recs), dropped)
}
