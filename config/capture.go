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
	method := o.Method
	if method == "" {
		method = MethodLog
	}
	if method != MethodLog && method != MethodQueue {
		errs = append(errs, Problem{Path: "--method", Msg: fmt.Sprintf("%q is not queue or log", method)})
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
	s := Session{Name: "capture", Method: method, HostOnly: o.HostOnly, Snaplen: o.Snaplen,
		Targets:      []Target{{Kind: KindPcap, Path: path, Format: o.Format}},
		FirstPackets: o.FirstPackets, Cgroup: o.Cgroup, User: o.User}
	for _, i := range o.Interfaces {
		for _, n := range splitList(i) {
			s.Sources = append(s.Sources, Source{Interface: n, Direction: o.Direction})
		}
	}
	if o.Proto != "" || o.Src != "" || o.Dst != "" || o.SPort != "" || o.DPort != "" {
		s.Rules = []Rule{{Number: 1, Action: "accept", Protocol: o.Proto, Source: o.Src, Destination: o.Dst,
			SourcePorts: o.SPort, DestinationPorts: o.DPort}}
	}
	c.Sessions = []Session{s}
	if verr := Validate(&c); len(verr) > 0 {
		return nil, flagPaths(verr)
	}
	return &c, nil
}

// flagPaths renames config key paths of a capture to the flags that set them.
func flagPaths(errs Errors) Errors {
	names := map[string]string{
		"protocol": "--proto", "source": "--src", "destination": "--dst", "source_ports": "--sport",
		"destination_ports": "--dport", "snaplen": "-s/--snaplen", "direction": "--direction",
		"interface": "-i/--interface", "format": "--format",
		"first_packets": "--first-packets", "cgroup": "--cgroup", "user": "--user",
	}
	out := make(Errors, len(errs))
	for i, p := range errs {
		key := p.Path[strings.LastIndex(p.Path, ".")+1:]
		if f, ok := names[key]; ok {
			p.Path = f
		}
		out[i] = p
	}
	return out
}
