package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TsharkFields are the fields Capture.Stop asks tshark for, in this order.
var TsharkFields = []string{
	"frame.number", "frame.len",
	"ip.src", "ip.dst", "ip.ttl",
	"ipv6.src", "ipv6.dst", "ipv6.hlim",
	"_ws.col.Protocol",
	"icmp.type", "icmp.seq",
	"icmpv6.type", "icmpv6.echo.sequence_number",
	"udp.srcport", "udp.dstport",
	"tcp.srcport", "tcp.dstport",
	"vxlan.vni", "geneve.vni",
}

// Packet is one captured frame as decoded by tshark, plus its raw bytes from the pcap.
// Integer fields are -1 when tshark did not report the field. Where a field occurs several
// times (an encapsulated packet, an ICMP error quoting a header) the simple fields hold the
// first (outermost) occurrence and Fields holds them all, outermost first.
type Packet struct {
	Number   int // frame number, from 1
	FrameLen int

	IPSrc, IPDst   string
	TTL            int
	IP6Src, IP6Dst string
	HopLimit       int
	Protocol       string // tshark's Protocol column, e.g. "ICMP", "ICMPv6", "VXLAN"... of the innermost layer shown

	ICMPType, ICMPSeq      int
	ICMPv6Type, ICMPv6Seq  int
	UDPSrcPort, UDPDstPort int
	TCPSrcPort, TCPDstPort int
	VXLANVNI, GeneveVNI    int

	// Fields maps each field of TsharkFields that tshark reported to all its occurrences.
	Fields map[string][]string

	// Record is the raw frame from the pcap file; IP its IP-layer bytes (nil if none).
	Record Record
	IP     []byte
}

// All returns every occurrence of a tshark field (outermost first).
func (p Packet) All(field string) []string { return p.Fields[field] }

// IsEchoRequest reports whether the packet is an ICMP or ICMPv6 echo request (outermost).
func (p Packet) IsEchoRequest() bool { return p.ICMPType == 8 || p.ICMPv6Type == 128 }

// IsEchoReply reports whether the packet is an ICMP or ICMPv6 echo reply (outermost).
func (p Packet) IsEchoReply() bool { return p.ICMPType == 0 || p.ICMPv6Type == 129 }

// Capture is a tcpdump running in a lab namespace, writing a pcap under t.TempDir().
type Capture struct {
	Path  string // the pcap file
	NS    string
	Iface string

	t    testing.TB
	proc *Proc

	mu      sync.Mutex
	stopped bool
	packets []Packet
}

type captureConfig struct {
	direction string
	snaplen   int
	promisc   bool
	extra     []string
}

// CaptureOption tunes StartCapture.
type CaptureOption func(*captureConfig)

// Direction captures only packets received ("in"), sent ("out") or both ("inout"), tcpdump -Q.
func Direction(d string) CaptureOption { return func(c *captureConfig) { c.direction = d } }

// Snaplen sets tcpdump's snapshot length (-s).
func Snaplen(n int) CaptureOption { return func(c *captureConfig) { c.snaplen = n } }

// Promisc lets tcpdump put the interface into promiscuous mode. By default captures run with
// -p so they never change interface flags (col and col2 are promiscuous anyway).
func Promisc() CaptureOption { return func(c *captureConfig) { c.promisc = true } }

// TcpdumpArgs appends raw tcpdump arguments (before the filter).
func TcpdumpArgs(args ...string) CaptureOption {
	return func(c *captureConfig) { c.extra = append(c.extra, args...) }
}

// StartCapture starts tcpdump on iface in namespace ns with a BPF filter ("" for all) and
// returns once tcpdump reports that it is listening (its filter is installed), so every
// packet sent after StartCapture returns is captured. tcpdump runs with -U -n
// --immediate-mode -p -Z root -B 16384 -w FILE. The capture is stopped at cleanup if Stop was not
// called.
func (l *Lab) StartCapture(t testing.TB, ns, iface string, filter string, opts ...CaptureOption) *Capture {
	t.Helper()
	RequireTools(t, "tcpdump", "tshark")
	cfg := captureConfig{}
	for _, o := range opts {
		o(&cfg)
	}
	dir := t.TempDir()
	c := &Capture{
		Path:  filepath.Join(dir, fmt.Sprintf("%s-%s.pcap", ns, iface)),
		NS:    ns,
		Iface: iface,
		t:     t,
	}
	args := []string{"-i", iface, "-U", "-n", "--immediate-mode", "-Z", "root", "-w", c.Path}
	if !cfg.promisc {
		args = append(args, "-p")
	}
	if cfg.direction != "" {
		args = append(args, "-Q", cfg.direction)
	}
	if cfg.snaplen > 0 {
		args = append(args, "-s", strconv.Itoa(cfg.snaplen))
	}
	args = append(args, cfg.extra...)
	if !slices.Contains(cfg.extra, "-B") {
		// 16 MiB of capture buffer unless the test says otherwise: with
		// tcpdump's default (2 MiB) a burst of copies on a loaded machine
		// was "dropped by kernel" and a test counted copies nfclone had sent.
		args = append(args, "-B", "16384")
	}
	if filter != "" {
		args = append(args, filter)
	}
	c.proc = l.Start(t, ns, "tcpdump", args...)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(c.proc.Stderr(), "listening on") {
		if c.proc.Exited() {
			t.Fatalf("tcpdump in %s on %s exited before listening: %s", ns, iface, c.proc.Stderr())
		}
		if time.Now().After(deadline) {
			c.proc.Kill()
			t.Fatalf("tcpdump in %s on %s not listening after 15s: %s", ns, iface, c.proc.Stderr())
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.stopped {
			c.stopped = true
			c.proc.Kill()
		}
	})
	return c
}

// Records reads the packets tcpdump has written so far (the capture keeps running).
func (c *Capture) Records() []Record {
	recs, _ := ReadPcapFile(c.Path)
	return recs
}

// Count returns how many packets tcpdump has written so far.
func (c *Capture) Count() int { return len(c.Records()) }

// WaitCount waits until the capture holds at least n packets, failing the test on timeout.
func (c *Capture) WaitCount(n int, timeout time.Duration) {
	c.t.Helper()
	WaitFor(c.t, timeout, func() bool { return c.Count() >= n },
		fmt.Sprintf("%d packets in capture %s/%s", n, c.NS, c.Iface))
}

// drain waits until tcpdump has stopped writing (file size unchanged for 150 ms, at most
// 3 s), so packets already delivered to its socket are in the file before it is stopped.
func (c *Capture) drain() {
	var last int64 = -1
	stable := 0
	deadline := time.Now().Add(3 * time.Second)
	for stable < 3 && time.Now().Before(deadline) {
		var size int64
		if fi, err := os.Stat(c.Path); err == nil {
			size = fi.Size()
		}
		if size == last {
			stable++
		} else {
			stable, last = 0, size
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop lets tcpdump finish writing what it has received, stops it (SIGINT, SIGKILL after
// 10 s), and returns the captured packets decoded by tshark, each with its raw frame and
// IP-layer bytes from the pcap. The pcap stays at c.Path until the test's temp dir is
// removed. Calling Stop again returns the same packets.
func (c *Capture) Stop() []Packet {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return c.packets
	}
	c.stopLocked()
	pkts, err := ReadPackets(c.Path)
	if err != nil {
		c.t.Fatalf("%v (tcpdump stderr: %s)", err, c.proc.Stderr())
	}
	c.packets = pkts
	return pkts
}

// ReadPackets decodes a pcap file with tshark (DecodePcap) and attaches each
// frame's raw record and IP-layer bytes from the file itself.
func ReadPackets(path string) ([]Packet, error) {
	recs, err := ReadPcapFile(path)
	if err != nil && !errors.Is(err, ErrTruncated) {
		return nil, fmt.Errorf("reading capture %s: %w", path, err)
	}
	pkts, err := DecodePcap(path)
	if err != nil {
		return nil, fmt.Errorf("decoding capture %s: %w", path, err)
	}
	if len(pkts) != len(recs) {
		return nil, fmt.Errorf("capture %s: tshark decoded %d frames, the pcap holds %d", path, len(pkts), len(recs))
	}
	for i := range pkts {
		pkts[i].Record = recs[i]
		pkts[i].IP, _ = recs[i].IP()
	}
	return pkts, nil
}

// Finish lets tcpdump finish writing and stops it as Stop does, but decodes nothing: for
// captures too big to decode frame by frame here, which tools read from c.Path. It returns
// how many packets tcpdump reported "dropped by kernel" (-1 when it did not say). Stop
// after Finish returns no packets.
func (c *Capture) Finish() (kernelDrops int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped {
		c.stopLocked()
	}
	m := tcpdumpDropsRE.FindStringSubmatch(c.proc.Stderr())
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

var tcpdumpDropsRE = regexp.MustCompile(`(?m)^(\d+) packets? dropped by kernel`)

// stopLocked drains and stops tcpdump (SIGINT, SIGKILL after 10 s); c.mu is held.
func (c *Capture) stopLocked() {
	c.stopped = true
	c.drain()
	_ = c.proc.Signal(syscall.SIGINT)
	if _, err := c.proc.Wait(10 * time.Second); err != nil {
		c.proc.Kill()
	}
}

// Tcpdump returns tcpdump's stderr (its closing lines report received/dropped counts).
func (c *Capture) Tcpdump() string { return c.proc.Stderr() }

// DecodePcap runs tshark on a pcap file and returns one Packet per frame with the
// TsharkFields decoded (Record and IP are left empty). Fields the installed tshark does not
// know are dropped and read as absent.
func DecodePcap(path string) ([]Packet, error) {
	fields := append([]string(nil), TsharkFields...)
	for attempt := 0; attempt < 3; attempt++ {
		args := []string{"-r", path, "-n", "-T", "fields",
			"-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=;", "-E", "quote=n"}
		for _, f := range fields {
			args = append(args, "-e", f)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := (&Lab{}).Exec(ctx, "", "tshark", args...)
		cancel()
		if err != nil {
			var ee *ExecError
			if errors.As(err, &ee) {
				if bad := invalidFields(ee.Stderr); len(bad) > 0 {
					fields = without(fields, bad)
					continue
				}
			}
			return nil, err
		}
		return parseTsharkFields(string(out), fields)
	}
	return nil, errors.New("tshark keeps rejecting fields")
}

// invalidFields parses tshark's "Some fields aren't valid:" message.
func invalidFields(stderr string) []string {
	i := strings.Index(stderr, "aren't valid")
	if i < 0 {
		return nil
	}
	var bad []string
	for _, line := range strings.Split(stderr[i:], "\n")[1:] {
		if f := strings.TrimSpace(line); f != "" && (strings.HasPrefix(line, "\t") || strings.HasPrefix(line, " ")) {
			bad = append(bad, f)
		}
	}
	return bad
}

func without(list, drop []string) []string {
	var out []string
	for _, f := range list {
		keep := true
		for _, d := range drop {
			if f == d {
				keep = false
			}
		}
		if keep {
			out = append(out, f)
		}
	}
	return out
}

// parseTsharkFields parses tshark -T fields output (tab separated, ';' between occurrences)
// for the given field list.
func parseTsharkFields(out string, fields []string) ([]Packet, error) {
	var pkts []Packet
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		cols := strings.Split(line, "\t")
		if len(cols) != len(fields) {
			return nil, fmt.Errorf("tshark line has %d columns, want %d: %q", len(cols), len(fields), line)
		}
		p := Packet{Fields: map[string][]string{}}
		for i, f := range fields {
			if cols[i] == "" {
				continue
			}
			p.Fields[f] = strings.Split(cols[i], ";")
		}
		first := func(f string) string {
			if v := p.Fields[f]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		num := func(f string) int {
			s := first(f)
			if s == "" {
				return -1
			}
			var n int64
			var err error
			if strings.HasPrefix(s, "0x") {
				n, err = strconv.ParseInt(s[2:], 16, 64)
			} else {
				n, err = strconv.ParseInt(s, 10, 64)
			}
			if err != nil {
				return -1
			}
			return int(n)
		}
		p.Number = num("frame.number")
		p.FrameLen = num("frame.len")
		p.IPSrc, p.IPDst, p.TTL = first("ip.src"), first("ip.dst"), num("ip.ttl")
		p.IP6Src, p.IP6Dst, p.HopLimit = first("ipv6.src"), first("ipv6.dst"), num("ipv6.hlim")
		p.Protocol = first("_ws.col.Protocol")
		p.ICMPType, p.ICMPSeq = num("icmp.type"), num("icmp.seq")
		p.ICMPv6Type, p.ICMPv6Seq = num("icmpv6.type"), num("icmpv6.echo.sequence_number")
		p.UDPSrcPort, p.UDPDstPort = num("udp.srcport"), num("udp.dstport")
		p.TCPSrcPort, p.TCPDstPort = num("tcp.srcport"), num("tcp.dstport")
		p.VXLANVNI, p.GeneveVNI = num("vxlan.vni"), num("geneve.vni")
		pkts = append(pkts, p)
	}
	return pkts, nil
}
