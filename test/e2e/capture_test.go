package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// `nfclone capture -c 20 -w f.pcap --host-only`: 20 packets that tcpdump
// reads, none of the forwarded ones; its rules are gone afterwards.
func TestCaptureHostOnly(t *testing.T) {
	l := lab.New(t)
	out := filepath.Join(t.TempDir(), "f.pcap")
	p := l.Start(t, l.Eng, binary, "capture", "-i", "e0", "--host-only", "--proto", "icmp", "-c", "20", "-w", out)
	lab.WaitFor(t, 10*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("capture exited early:\n%s", p.Stderr())
		}
		return strings.Contains(p.Stderr(), "capturing on")
	}, "capture to start")
	// Forwarded traffic (src → col2 through eng) and traffic to the host at once.
	fwd := make(chan error, 1)
	go func() {
		_, _, _, err := lab.Ping(context.Background(), l, l.Src, lab.Col2IP, 30, 10*time.Millisecond)
		fwd <- err
	}()
	ping(t, l, l.Src, lab.EngE0IP, 15) // 15 requests in + 15 replies out: 30 > 20
	if err := <-fwd; err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(10 * time.Second); code != 0 || err != nil {
		t.Fatalf("capture: exit %d %v\n%s", code, err, p.Stderr())
	}
	if !strings.Contains(p.Stderr(), "20 packets captured") {
		t.Fatalf("capture's summary:\n%s", p.Stderr())
	}
	tcpdump := l.MustExec(t, "", "tcpdump", "-n", "-r", out)
	lines := strings.Split(strings.TrimSpace(tcpdump), "\n")
	if len(lines) != 20 {
		t.Fatalf("tcpdump -r reads %d packets, want 20:\n%s", len(lines), tcpdump)
	}
	ps, err := lab.ReadPackets(out)
	if err != nil {
		t.Fatal(err)
	}
	requireCount(t, "packets of the forwarded pings", ps, func(p lab.Packet) bool {
		return p.IPDst == lab.Col2IP || p.IPSrc == lab.Col2IP
	}, 0)
	requireCount(t, "packets to or from the host", ps, func(p lab.Packet) bool {
		return p.IPDst == lab.EngE0IP || p.IPSrc == lab.EngE0IP
	}, 20)
	if rs := nftRuleset(t, l); strings.TrimSpace(rs) != "" {
		t.Fatalf("capture left rules:\n%s", rs)
	}
}

// Filters, --method queue, --duration, and standard output.
func TestCaptureFiltersToStdout(t *testing.T) {
	l := lab.New(t)
	p := l.Start(t, l.Eng, binary, "capture", "-i", "e0", "--direction", "ingress", "--proto", "udp", "--dport", "7000-7010",
		"--method", "queue", "--duration", "3s", "-w", "-")
	lab.WaitFor(t, 10*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("capture exited early:\n%s", p.Stderr())
		}
		return strings.Contains(p.Stderr(), "capturing on")
	}, "capture to start")
	for _, port := range []string{"7005", "8000", "7010"} {
		l.MustExec(t, l.Src, "bash", "-c", "echo hi > /dev/udp/"+lab.EngE0IP+"/"+port)
	}
	ping(t, l, l.Src, lab.EngE0IP, 3)
	if code, err := p.Wait(15 * time.Second); code != 0 || err != nil {
		t.Fatalf("capture: exit %d %v\n%s", code, err, p.Stderr())
	}
	f := filepath.Join(t.TempDir(), "stdout.pcap")
	if err := os.WriteFile(f, []byte(p.Stdout()), 0o600); err != nil {
		t.Fatal(err)
	}
	ps, err := lab.ReadPackets(f)
	if err != nil {
		t.Fatalf("standard output is not a pcap: %v", err)
	}
	requireCount(t, "udp to 7005 and 7010", ps, func(p lab.Packet) bool { return p.UDPDstPort == 7005 || p.UDPDstPort == 7010 }, 2)
	if len(ps) != 2 {
		t.Fatalf("capture holds %d packets, want only the 2 matching ones", len(ps))
	}
	if rs := nftRuleset(t, l); strings.TrimSpace(rs) != "" {
		t.Fatalf("capture left rules:\n%s", rs)
	}
}

// Bad input for the tunnel side: clear errors, exit 1.
func TestTunnelBadInput(t *testing.T) {
	l := lab.New(t)
	path, _ := writeConfig(t, `
sessions:
  - name: t
    method: log
    sources: [{interface: e0}]
    targets:
      - {kind: vxlan, remote: "10.77.4.2", vni: 16777216}
      - {kind: geneve, remote: ["10.77.4.2:6081", "nope:1"], vni: -1}
      - {kind: pcap, path: relative.pcap}
`)
	_, errOut, code := nfc(l, "check", "-c", path)
	if code != 1 {
		t.Fatalf("check: exit %d, want 1\n%s", code, errOut)
	}
	for _, want := range []string{
		`sessions[0].targets[0].remote: "10.77.4.2" has no port`,
		"sessions[0].targets[0].vni: 16777216 is out of range 0-16777215",
		`sessions[0].targets[1].remote[1]: "nope:1": "nope" is not an IP address`,
		"sessions[0].targets[1].vni: -1 is out of range 0-16777215",
		`sessions[0].targets[2].path: "relative.pcap" must be an absolute path or -`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("missing %q in:\n%s", want, errOut)
		}
	}
	// An unwritable pcap path: exit 2 naming the path; nothing left behind.
	path, _ = writeConfig(t, `
sessions:
  - name: t
    method: log
    sources: [{interface: e0}]
    targets: [{kind: pcap, path: /proc/nfclone-cannot-write/x.pcap}]
`)
	_, errOut, code = nfc(l, "run", "-c", path)
	if code != 2 || !strings.Contains(errOut, "/proc/nfclone-cannot-write/x.pcap") {
		t.Fatalf("run with an unwritable pcap: exit %d, want 2 naming the path:\n%s", code, errOut)
	}
	if rs := nftRuleset(t, l); strings.TrimSpace(rs) != "" {
		t.Fatalf("a failed run left rules:\n%s", rs)
	}
}
