package lab

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func nsList(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	return string(out)
}

func requirePing(t *testing.T, l *Lab, ns, dst string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sent, recv, dupes, err := Ping(ctx, l, ns, dst, n, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if sent != n || recv != n || dupes != 0 {
		t.Fatalf("ping %s from %s: sent %d received %d dupes %d, want %d/%d/0", dst, ns, sent, recv, dupes, n, n)
	}
}

// checkEchoRequests requires exactly n echo requests from src to dst (v4 or v6), with
// sequence numbers 1..n, and nothing else in pkts. An empty capture fails.
func checkEchoRequests(pkts []Packet, src, dst string, n int) error {
	if n <= 0 {
		return fmt.Errorf("expected count must be positive, got %d", n)
	}
	if len(pkts) != n {
		return fmt.Errorf("captured %d packets, want exactly %d echo requests", len(pkts), n)
	}
	for i, p := range pkts {
		s, d := p.IPSrc, p.IPDst
		seq := p.ICMPSeq
		if strings.Contains(src, ":") {
			s, d, seq = p.IP6Src, p.IP6Dst, p.ICMPv6Seq
		}
		if !p.IsEchoRequest() || s != src || d != dst {
			return fmt.Errorf("packet %d: %s %s -> %s icmp type %d/%d, want echo request %s -> %s",
				p.Number, p.Protocol, s, d, p.ICMPType, p.ICMPv6Type, src, dst)
		}
		if seq != i+1 {
			return fmt.Errorf("packet %d: sequence %d, want %d", p.Number, seq, i+1)
		}
		if len(p.IP) == 0 {
			return fmt.Errorf("packet %d: no IP-layer bytes from the pcap", p.Number)
		}
	}
	return nil
}

func TestCheckEchoRequestsRejectsEmptyCapture(t *testing.T) {
	if err := checkEchoRequests(nil, SrcIP, ColIP, 5); err == nil {
		t.Fatal("a capture of zero packets passed")
	}
}

func TestLab(t *testing.T) {
	start := time.Now()
	l := New(t)
	t.Logf("lab %s built in %v", l.Suffix, time.Since(start))
	for _, ns := range l.Namespaces() {
		if !strings.HasSuffix(ns, "-"+l.Suffix) {
			t.Fatalf("namespace %q lacks suffix %q", ns, l.Suffix)
		}
	}
	if got := nsList(t); strings.Count(got, "-"+l.Suffix) != 5 {
		t.Fatalf("ip netns list does not show the 5 lab namespaces:\n%s", got)
	}

	t.Run("sysctls", func(t *testing.T) {
		want := map[string]map[string]string{
			l.Eng: {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1", "net.ipv4.conf.all.rp_filter": "0",
				"net.ipv4.conf.e0.rp_filter": "0", "net.ipv4.conf.e3.rp_filter": "0", "net.ipv4.conf.all.arp_ignore": "1"},
			l.Col:  {"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0", "net.ipv4.conf.e0.rp_filter": "0"},
			l.Col2: {"net.ipv4.ip_forward": "0", "net.ipv4.conf.all.rp_filter": "0"},
		}
		for ns, kv := range want {
			for k, v := range kv {
				if got := strings.TrimSpace(l.MustExec(t, ns, "sysctl", "-n", k)); got != v {
					t.Errorf("%s: %s = %s, want %s", ns, k, got, v)
				}
			}
		}
		for _, ns := range []string{l.Col, l.Col2} {
			if out := l.MustExec(t, ns, "ip", "link", "show", "e0"); !strings.Contains(out, "PROMISC") {
				t.Errorf("%s e0 not promiscuous: %s", ns, out)
			}
		}
	})

	t.Run("ping", func(t *testing.T) {
		cases := []struct{ ns, dst string }{
			{l.Src, EngE0IP}, {l.Src, EngE06},
			{l.Src, Col2IP}, {l.Src, Col26},
			{l.Src2, SrcIP}, {l.Src2, Src6},
			{l.Col, Src2IP}, {l.Col2, Col6},
		}
		for _, c := range cases {
			requirePing(t, l, c.ns, c.dst, 3)
		}
	})

	for _, v := range []struct {
		name, filter, src, dst string
	}{
		{"capture-v4", "icmp and icmp[icmptype] == icmp-echo", SrcIP, ColIP},
		{"capture-v6", "icmp6 and ip6[40] == 128", Src6, Col6},
	} {
		t.Run(v.name, func(t *testing.T) {
			const n = 5
			capCol := l.StartCapture(t, l.Col, Iface, v.filter)
			capSrc := l.StartCapture(t, l.Src, Iface, v.filter, Direction("out"))
			requirePing(t, l, l.Src, v.dst, n)
			capCol.WaitCount(n, 5*time.Second)
			atCol, atSrc := capCol.Stop(), capSrc.Stop()
			if err := checkEchoRequests(atCol, v.src, v.dst, n); err != nil {
				t.Fatalf("at col: %v", err)
			}
			if err := checkEchoRequests(atSrc, v.src, v.dst, n); err != nil {
				t.Fatalf("at src: %v", err)
			}
			for i := range atCol {
				c, s := atCol[i], atSrc[i]
				if strings.Contains(v.src, ":") {
					if s.HopLimit-c.HopLimit != 1 {
						t.Errorf("hop limit %d at src, %d at col: eng should forward with -1", s.HopLimit, c.HopLimit)
					}
					// IPv6: everything but the hop limit (byte 7) is unchanged.
					cb, sb := append([]byte(nil), c.IP...), append([]byte(nil), s.IP...)
					cb[7], sb[7] = 0, 0
					if !bytes.Equal(cb, sb) {
						t.Errorf("packet %d differs between src and col beyond the hop limit", i+1)
					}
				} else {
					if s.TTL-c.TTL != 1 {
						t.Errorf("TTL %d at src, %d at col: eng should forward with -1", s.TTL, c.TTL)
					}
					// IPv4: payload after the header is unchanged.
					hl := int(c.IP[0]&0x0f) * 4
					if !bytes.Equal(c.IP[hl:], s.IP[hl:]) {
						t.Errorf("packet %d payload differs between src and col", i+1)
					}
				}
				if c.FrameLen != len(c.Record.Data) {
					t.Errorf("frame.len %d, pcap record %d bytes", c.FrameLen, len(c.Record.Data))
				}
			}
			if again := capCol.Stop(); len(again) != n {
				t.Errorf("second Stop returned %d packets", len(again))
			}
		})
	}

	t.Run("proc", func(t *testing.T) {
		p := l.Start(t, l.Eng, "sleep", "60")
		if _, err := p.Wait(50 * time.Millisecond); err != ErrTimeout {
			t.Fatalf("Wait on running sleep: %v, want ErrTimeout", err)
		}
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code, err := p.Wait(5 * time.Second); err != nil || code != -1 {
			t.Fatalf("sleep after SIGTERM: code %d err %v", code, err)
		}
		q := l.Start(t, l.Col, "sh", "-c", "echo out; echo err >&2; ip -br addr show e0; exit 3")
		if code, err := q.Wait(5 * time.Second); err != nil || code != 3 {
			t.Fatalf("sh exit: code %d err %v", code, err)
		}
		if !strings.HasPrefix(q.Stdout(), "out\n") || !strings.Contains(q.Stdout(), ColIP) || q.Stderr() != "err\n" {
			t.Fatalf("stdout %q stderr %q", q.Stdout(), q.Stderr())
		}
		r := l.Start(t, l.Eng, "sleep", "60")
		r.Kill()
		if !r.Exited() {
			t.Fatal("Kill did not end the process")
		}
	})

	t.Run("exec", func(t *testing.T) {
		_, err := l.Exec(context.Background(), l.Eng, "sh", "-c", "echo oops >&2; exit 7")
		ee, ok := err.(*ExecError)
		if !ok || ee.ExitCode() != 7 || !strings.Contains(ee.Stderr, "oops") {
			t.Fatalf("Exec error %#v", err)
		}
	})

	if err := l.Teardown(); err != nil {
		t.Fatal(err)
	}
	if got := nsList(t); strings.Contains(got, l.Suffix) {
		t.Fatalf("namespaces with suffix %s left after teardown:\n%s", l.Suffix, got)
	}
	if out, _ := exec.Command("ip", "-o", "link").Output(); strings.Contains(string(out), "nl"+l.Suffix) {
		t.Fatalf("veth temporaries left in the host namespace:\n%s", out)
	}
}

// TestCleanupRemovesLab checks that the t.Cleanup registered by New removes the lab, and
// kills processes left running in it, when the (sub)test ends.
func TestCleanupRemovesLab(t *testing.T) {
	RequireRoot(t)
	var suffix string
	t.Run("inner", func(t *testing.T) {
		l := New(t)
		suffix = l.Suffix
		l.Start(t, l.Col, "sleep", "600")
		// a process not started through Start: teardown must kill it too
		cmd := exec.Command("ip", "netns", "exec", l.Eng, "sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = cmd.Wait() }()
	})
	if got := nsList(t); suffix == "" || strings.Contains(got, suffix) {
		t.Fatalf("namespaces with suffix %q left after cleanup:\n%s", suffix, got)
	}
}

// TestParallelLabs builds two labs at once: random suffixes, no name collisions.
func TestParallelLabs(t *testing.T) {
	RequireRoot(t)
	var mu sync.Mutex
	seen := map[string]bool{}
	t.Run("group", func(t *testing.T) {
		for i := 0; i < 2; i++ {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				l := New(t)
				mu.Lock()
				if seen[l.Suffix] {
					t.Errorf("suffix %s used twice", l.Suffix)
				}
				seen[l.Suffix] = true
				mu.Unlock()
				requirePing(t, l, l.Src, Col2IP, 2)
				requirePing(t, l, l.Src, Col26, 2)
			})
		}
	})
	got := nsList(t)
	for s := range seen {
		if strings.Contains(got, s) {
			t.Errorf("lab %s left behind", s)
		}
	}
}

// TestLabScript drives scripts/lab.sh: up/down, rollback on failure, the fallback veth path.
func TestLabScript(t *testing.T) {
	RequireRoot(t)
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "scripts", "lab.sh")
	runScript := func(env []string, args ...string) (string, error) {
		cmd := exec.Command("bash", append([]string{script}, args...)...)
		cmd.Env = append(cmd.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, env := range [][]string{nil, {"LAB_VETH_FALLBACK=1"}} {
		suffix := RandomSuffix()
		t.Cleanup(func() { _, _ = runScript(nil, "down", suffix) })
		out, err := runScript(env, "up", suffix)
		if err != nil {
			t.Fatalf("lab.sh up %s (%v): %v\n%s", suffix, env, err, out)
		}
		if !strings.Contains(out, "export LAB_SUFFIX="+suffix) ||
			!regexp.MustCompile(`SRC=src-`+suffix+` SRC2=src2-`+suffix+` ENG=eng-`+suffix+` COL=col-`+suffix+` COL2=col2-`+suffix).MatchString(out) {
			t.Fatalf("lab.sh up output:\n%s", out)
		}
		l := &Lab{Suffix: suffix, Src: "src-" + suffix, Src2: "src2-" + suffix, Eng: "eng-" + suffix, Col: "col-" + suffix, Col2: "col2-" + suffix}
		requirePing(t, l, l.Src, Col2IP, 2)
		requirePing(t, l, l.Src2, Col6, 2)
		for i := 0; i < 2; i++ { // idempotent
			if out, err := runScript(nil, "down", suffix); err != nil {
				t.Fatalf("lab.sh down: %v\n%s", err, out)
			}
		}
		if got := nsList(t); strings.Contains(got, suffix) {
			t.Fatalf("lab.sh down left namespaces:\n%s", got)
		}
	}

	suffix := RandomSuffix()
	t.Cleanup(func() { _, _ = runScript(nil, "down", suffix) })
	out, err := runScript([]string{"LAB_INJECT_FAILURE=1"}, "up", suffix)
	if err == nil || !strings.Contains(out, "rolling back") {
		t.Fatalf("lab.sh up with injected failure: err %v\n%s", err, out)
	}
	if got := nsList(t); strings.Contains(got, suffix) {
		t.Fatalf("failed lab.sh up left namespaces:\n%s", got)
	}
}

// TestVethFallback builds a lab through the fallback path (temporary names in the host
// namespace, moved and renamed) and checks that no temporary is left behind.
func TestVethFallback(t *testing.T) {
	RequireRoot(t)
	forceVethFallback = true
	defer func() { forceVethFallback = false }()
	var suffix string
	t.Run("inner", func(t *testing.T) {
		l := New(t)
		suffix = l.Suffix
		if out := l.MustExec(t, l.Eng, "ip", "-br", "link"); strings.Contains(out, "nl"+l.Suffix) {
			t.Fatalf("temporary names left in eng:\n%s", out)
		}
		requirePing(t, l, l.Src, Col2IP, 2)
		requirePing(t, l, l.Src2, Col6, 2)
	})
	if out, _ := exec.Command("ip", "-o", "link").Output(); strings.Contains(string(out), "nl"+suffix) {
		t.Fatalf("veth temporaries left in the host namespace:\n%s", out)
	}
	if got := nsList(t); strings.Contains(got, suffix) {
		t.Fatalf("namespaces left:\n%s", got)
	}
}
