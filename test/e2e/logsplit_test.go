package e2e

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// TestLogKernelSendsTCP: a log session to one gateway with the defaults
// (queue.log_kernel_route: tcp) copies a TCP file transfer and pings in
// one session. The kernel sends the TCP clones — NFLOG's second group
// hands nfclone only their first 128 bytes — and nfclone sends the pings'
// copies it logged whole to the first group. At col, judged by the tools:
// tcpflow reassembles the file's SHA-256 from the TCP copies, tshark finds
// every checksum Good and no frame over 1514 bytes, and every ping's copy
// is its original byte for byte. `check` says who sends what, `status`
// shows the target as "gateway (kernel: tcp)", and the ledger balances
// with every copy made.
func TestLogKernelSendsTCP(t *testing.T) {
	lab.RequireTools(t, "socat", "ethtool", "tcpdump", "tshark", "tcpflow", "ss")
	const size = 8 << 20
	file, sum := writeRandomFile(t, t.TempDir(), "split.bin", size)
	l := lab.New(t)
	wireCollector(t, l)
	ping(t, l, l.Eng, lab.ColIP, 1)
	tcpCopies := l.StartCapture(t, l.Col, lab.Iface, fmt.Sprintf("tcp port %d", bulkPort), lab.Direction("in"), lab.TcpdumpArgs("-s", "0", "-B", collectorBuf))
	pingCopies := l.StartCapture(t, l.Col, lab.Iface, "icmp[0] == 8", lab.Direction("in"))
	pingOrigs := l.StartCapture(t, l.Eng, lab.EngToSrc, "icmp[0] == 8", lab.Direction("in"))
	d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: lg
    method: log
    sources: [{interface: e0, direction: ingress}]
    rules:
      - {number: 1, action: accept, protocol: tcp, destination_ports: "%d"}
      - {number: 2, action: accept, protocol: icmp}
    targets: [{kind: gateway, gateway: %s, device: e1}]
`, bulkPort, lab.ColIP))
	if out, errOut, code := nfc(l, "check", "-c", d.cfgPath); code != 0 || !strings.Contains(out, "the kernel sends the copies of TCP packets to the gateway "+lab.ColIP) {
		t.Fatalf("check: exit %d, no note that the kernel sends the TCP copies:\n%s%s", code, out, errOut)
	}
	// The kernel's own account of the groups: the first copies whole
	// packets, the second 128 bytes (group, portid, qlen, copy mode, copy
	// range, …).
	groups := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(l.MustExec(t, l.Eng, "cat", "/proc/net/netfilter/nfnetlink_log")), "\n") {
		if f := strings.Fields(line); len(f) >= 5 {
			groups[f[0]] = f[4]
		}
	}
	if len(groups) != 2 || groups["1"] != "128" || groups["0"] == "128" {
		t.Fatalf("nfnetlink_log groups (group: copy range) %v: want 0 whole and 1 with 128 bytes", groups)
	}

	const pings = 10
	ping(t, l, l.Src, lab.Col2IP, pings)
	sendFileToCol2(t, l, file, sum, tcpCopies.Path)
	pingCopies.WaitCount(pings, 5*time.Second)
	st, _, _ := nfc(l, "status", "--state-dir", d.stateDir)
	if !regexp.MustCompile(`lg/0:gateway\s+gateway \(kernel: tcp\)\s+lg`).MatchString(st) {
		t.Errorf("status does not show the target as the kernel's for TCP:\n%s", st)
	}
	// Who read what: the first group's reader the pings alone, the
	// second the TCP clones.
	read := map[int]float64{}
	for _, ss := range status(t, l, d)["sessions"].([]any) {
		s := ss.(map[string]any)
		if s["name"] != "lg" {
			continue
		}
		for _, r := range s["readers"].([]any) {
			rd := r.(map[string]any)
			read[int(rd["num"].(float64))] = rd["stats"].(map[string]any)["packets"].(float64)
		}
	}
	if read[0] != pings || read[1] < 100 {
		t.Errorf("packets read per NFLOG group %v: want the %d pings from group 0 and the TCP clones (over 100) from group 1", read, pings)
	}
	d.stop(t)
	if drops := tcpCopies.Finish(); drops != 0 {
		t.Errorf("tcpdump at the collector reports %d packets dropped by kernel", drops)
	}
	requireCopiesExact(t, "pings nfclone sent", pingOrigs.Stop(), pingCopies.Stop(), pings)

	j := judgeTCPCopies(t, tcpCopies.Path, false)
	t.Logf("TCP copies at col: %d frames, %d data segments; stream %d bytes", j.frames, j.dataFrames, j.streamLen)
	if j.dataFrames == 0 || j.streamSHA != sum {
		t.Errorf("the TCP copies' stream (%s%s) is %d bytes, not the %d-byte file (%d data segments copied)\n%s", j.streamTool, j.streamNote, j.streamLen, size, j.dataFrames, dropCounters(l))
	}
	if n := j.ipSum.bad() + j.tcpSum.bad(); n > 0 || j.tcpSum["1"] == 0 {
		t.Errorf("checksums not Good: IPv4 %v, TCP %v", j.ipSum, j.tcpSum)
	}
	if len(j.oversize) > 0 || j.fragments > 0 {
		t.Errorf("%d frames over %d bytes (%s), %d IP fragments", len(j.oversize), maxWireFrame, first(j.oversize, 5), j.fragments)
	}
	led := ledgerNumbers(t, d.Stderr(), "lg") // fails unless balanced
	t.Logf("ledger %v", led)
	if led["copied"] != led["offered"] || led["offered"] < pings+uint64(j.dataFrames)/64 {
		t.Errorf("ledger %v: want every offered packet copied", led)
	}
}

// sendFileToCol2 sends file (SHA-256 sum) over TCP from src to col2's
// bulkPort with socat, requires col2 to receive it whole, and waits up to
// 5 s for the capture at capture to hold the copy of the data direction's
// FIN.
func sendFileToCol2(t *testing.T, l *lab.Lab, file string, sum [32]byte, capture string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "received.bin")
	rcv := l.Start(t, l.Col2, "socat", "-u", fmt.Sprintf("TCP4-LISTEN:%d,reuseaddr", bulkPort), "CREATE:"+out)
	lab.WaitFor(t, 10*time.Second, func() bool {
		o, _ := l.Exec(context.Background(), l.Col2, "ss", "-Hltn", fmt.Sprintf("sport = :%d", bulkPort))
		return len(bytes.TrimSpace(o)) > 0
	}, "socat to listen in col2")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	_, err := l.Exec(ctx, l.Src, "socat", "-u", "FILE:"+file, fmt.Sprintf("TCP4:%s:%d", lab.Col2IP, bulkPort))
	cancel()
	if err != nil {
		t.Fatalf("sending the file: %v", err)
	}
	if code, err := rcv.Wait(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("receiver socat: exit %d, %v: %s", code, err, rcv.Stderr())
	}
	if got, _ := fileSHA(t, out); got != sum {
		t.Fatal("the originals: col2 did not receive the file")
	}
	for end := time.Now().Add(5 * time.Second); !finCopied(capture) && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
}
