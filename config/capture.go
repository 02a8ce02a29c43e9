package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// CaptureOptions are the flags of `nfclone capture`.
type CaptureOptions struct {
	Interfaces []string // -i, repeatable (required)
	Direction  string   // ingress | egress | both
	HostOnly   bool
	Proto      string
	Src, Dst   string
	SPort      string
	DPort      string
	Snaplen    int
	Method     string // queue | log (default log)
	Output     string // -w FILE or -
	Format     string // pcap | pcapng
	// Selectors (select.go).
	FirstPackets int
	Cgroup       string
	User         string
	// Filter is a tcpdump filter expression (the trailing arguments).
	Filter string
}

// Capture builds the one-session config of a troubleshooting capture. The
// tables are private to this process (table nfclone_cap<pid>), so a capture
// runs beside a running daemon; so are the NFLOG group / NFQUEUE numbers
// (from 50000 + pid % 10000). StateDir is only a placeholder: the command
// replaces it with a fresh directory (engine.PrivateStateDir), never a
// predictable path someone else could have created first.
func Capture(o CaptureOptions, pid int) (*Config, error) {
	c := Default()
	c.Table = fmt.Sprintf("nfclone_cap%d", pid)
	c.StateDir = filepath.Join(os.TempDir(), fmt.Sprintf("nfclone-capture-%d", pid))
	c.Metrics.Listen = ""
	c.Queue.Num = 50000 + pid%10000
	c.Queue.Workers = 1
	var errs Errors
	if len(o.Interfaces) == 0 {
		errs = append(errs, Problem{Path: "-i/--interface", Msg: "at least one interface is required"})
	}
	if o.Output == "" {
		errs = append(errs, Problem{Path: "-w", Msg: "an output file (or - for standard output) is required"})
	}
	method := Method(o.Method)
	if method == "" {
		method = MethodLog
	}
	if method != MethodLog && method != MethodQueue {
		errs = append(errs, Problem{Path: "--method", Msg: fmt.Sprintf("%q is not queue or log", method)})
	}
	flags := o.Proto != "" || o.Src != "" || o.Dst != "" || o.SPort != "" || o.DPort != ""
	if strings.TrimSpace(o.Filter) != "" && flags {
		errs = append(errs, Problem{Path: "filter '" + o.Filter + "'", Msg: "give the filter as an expression or as --proto/--src/--dst/--sport/--dport, not both"})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	path := o.Output
	if path != "-" {
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
	}
	s := Session{Name: "capture", Method: method, HostOnly: o.HostOnly, Snaplen: o.Snaplen, Filter: strings.TrimSpace(o.Filter),
		Targets:      []Target{{Kind: KindPcap, Path: path, Format: Format(o.Format)}},
		FirstPackets: o.FirstPackets, Cgroup: o.Cgroup, User: o.User}
	for _, i := range o.Interfaces {
		for _, n := range splitList(i) {
			s.Sources = append(s.Sources, Source{Interface: n, Direction: Direction(o.Direction)})
		}
	}
	if o.Proto != "" || o.Src != "" || o.Dst != "" || o.SPort != "" || o.DPort != "" {
		r := Rule{Number: 1, Action: ActionAccept, Protocol: o.Proto, Source: o.Src, Destination: o.Dst,
			SourcePorts: o.SPort, DestinationPorts: o.DPort}
		s.Rules = []Rule{r}
		if o.Proto == "" && (o.SPort != "" || o.DPort != "") {
			// Ports without a protocol mean TCP and UDP, as tcpdump's port.
			tcp, udp := r, r
			tcp.Protocol, udp.Protocol, udp.Number = "tcp", "udp", 2
			s.Rules = []Rule{tcp, udp}
		}
	}
	c.Sessions = []Session{s}
	if verr := Validate(&c); len(verr) > 0 {
		return nil, CaptureWords(verr, o)
	}
	return &c, nil
}

// flagPath renames a config key path of a capture to the flag that set it.
func flagPath(p Problem) Problem {
	names := map[string]string{
		"protocol": "--proto", "source": "--src", "destination": "--dst", "source_ports": "--sport",
		"destination_ports": "--dport", "snaplen": "-s/--snaplen", "direction": "--direction",
		"interface": "-i/--interface", "format": "--format",
		"first_packets": "--first-packets", "cgroup": "--cgroup", "user": "--user",
	}
	key := p.Path[strings.LastIndex(p.Path, ".")+1:]
	if f, ok := names[key]; ok {
		p.Path = f
	}
	return p
}
