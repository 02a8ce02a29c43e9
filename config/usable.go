package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/nfclone/nfclone/filter"
)

// CheckFiles checks what a config writes on this host: the directory of
// every pcap target exists (the sink would fail to open only once the rules
// are in). It is a host problem, like a missing interface.
func CheckFiles(c *Config) Errors {
	var p problems
	for i, s := range c.Sessions {
		for j, t := range s.Targets {
			if t.Kind != KindPcap || t.Path == "" || t.Path == "-" {
				continue
			}
			path := fmt.Sprintf("sessions[%d].targets[%d].path", i, j)
			if msg := pcapPathProblem(t.Path); msg != "" {
				p.add(path, "%s", msg)
			}
		}
	}
	return p.list
}

// pcapPathProblem says why a pcap file cannot be written at path ("" if
// nothing is wrong that can be seen before opening it).
func pcapPathProblem(path string) string {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("directory %s does not exist", dir)
	case err != nil:
		return fmt.Sprintf("directory %s: %v", dir, errors.Unwrap(err))
	case !st.IsDir():
		return fmt.Sprintf("%s is not a directory", dir)
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Sprintf("%s is a directory", path)
	}
	return ""
}

// Warnings returns what in a valid config is probably not what was meant;
// check prints them and run logs them. A rule's address with host bits set
// (10.99.1.5/24) is a warning, not an error: it matches the whole network
// (10.99.1.0/24), as nft would, and the warning says so.
func Warnings(c *Config) Errors {
	var p problems
	for i, s := range c.Sessions {
		for j, r := range s.Rules {
			for _, f := range []struct{ key, val string }{{"source", r.Source}, {"destination", r.Destination}} {
				if msg := hostBits(f.val); msg != "" {
					p.add(fmt.Sprintf("sessions[%d].rules[%d].%s", i, j, f.key), "%s", msg)
				}
			}
		}
	}
	return p.list
}

// hostBits describes a CIDR whose address has bits outside its prefix.
func hostBits(s string) string {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		return ""
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil || pfx.Masked() == pfx {
		return ""
	}
	return fmt.Sprintf("%q has host bits set: it matches the whole network %s (for the host alone write %s/%d)",
		s, pfx.Masked(), pfx.Addr(), pfx.Addr().BitLen())
}

// validateFamilies refuses a gateway target whose address family no accept
// rule of the session can match: its chains (ip or ip6 table) would hold no
// rule that copies, so it would never get a copy. Only where the gateway's
// family decides what is copied: method dup (one table per gateway family),
// or a userspace session whose targets are all gateways.
func validateFamilies(p *problems, path string, s *Session) {
	if len(s.Rules) == 0 && strings.TrimSpace(s.Filter) == "" {
		return
	}
	if s.Method != MethodDup {
		for _, t := range s.Targets {
			if t.Kind != KindGateway {
				return
			}
		}
	}
	can := map[int]bool{}
	for _, r := range s.Rules {
		if r.Action == ActionAccept {
			for _, f := range ruleFamilies(r) {
				can[f] = true
			}
		}
	}
	what := "every accept rule of this session matches IPv%d only"
	none := "no rule of this session accepts a packet"
	if strings.TrimSpace(s.Filter) != "" {
		e, err := filter.Parse(s.Filter)
		if err != nil || e == nil {
			return // reported by validateFilter
		}
		for _, fam := range []uint8{4, 6} {
			ts, err := e.Terms(fam)
			can[int(fam)] = err == nil && len(ts) > 0
		}
		what = "the session's filter matches IPv%d packets only"
		none = "the session's filter matches no IP packet"
	}
	for i, t := range s.Targets {
		if t.Kind != KindGateway {
			continue
		}
		gw, err := netip.ParseAddr(t.Gateway)
		if err != nil {
			continue
		}
		fam := 4
		if gw.Unmap().Is6() {
			fam = 6
		}
		switch {
		case !can[fam] && can[10-fam]:
			p.add(fmt.Sprintf("%s.targets[%d].gateway", path, i),
				"%s is IPv%d but "+what+": its chains would copy nothing (add a rule for IPv%d, or a gateway of the rules' family)",
				t.Gateway, fam, 10-fam, fam)
		case !can[fam]:
			p.add(fmt.Sprintf("%s.targets[%d].gateway", path, i),
				"%s would never get a copy: %s", t.Gateway, none)
		}
	}
}

// ruleFamilies are the IP families a rule can match (4, 6 or both), from
// its addresses and an icmp/icmpv6 protocol — as the rules compiler decides
// which tables a rule goes into.
func ruleFamilies(r Rule) []int {
	v4, v6 := false, false
	for _, a := range []string{r.Source, r.Destination} {
		if a == "" {
			continue
		}
		if pfx, err := ParsePrefix(a); err == nil {
			if pfx.Addr().Is4() {
				v4 = true
			} else {
				v6 = true
			}
		}
	}
	if proto, ok, err := ParseProtocol(r.Protocol); err == nil && ok {
		v4 = v4 || proto == 1
		v6 = v6 || proto == 58
	}
	switch {
	case v4 && v6:
		return nil // a contradiction: Validate reports it
	case v4:
		return []int{4}
	case v6:
		return []int{6}
	}
	return []int{4, 6}
}

// explicitZeroSamples finds `sample: 0` in the raw YAML: the decoded zero is
// indistinguishable from an absent key (which means 1), but written out it
// is a mistake (copy 1 packet in 0).
func explicitZeroSamples(raw map[string]any) Errors {
	var out Errors
	list, _ := raw["sessions"].([]any)
	for i, s := range list {
		m, ok := s.(map[string]any)
		if !ok {
			continue
		}
		v, ok := m["sample"]
		if !ok {
			continue
		}
		if fmt.Sprint(v) == "0" {
			out = append(out, Problem{Path: fmt.Sprintf("sessions[%d].sample", i), Msg: "0 is out of range 1-1048576 (copy 1 packet in N; leave it out to copy every packet)"})
		}
	}
	return out
}

// validateFilter parses a session's filter expression; it replaces rules.
func validateFilter(p *problems, path string, s *Session) {
	if strings.TrimSpace(s.Filter) == "" {
		return
	}
	if len(s.Rules) > 0 {
		p.add(path+".filter", "a session has rules or a filter expression, not both")
	}
	e, err := filter.Parse(s.Filter)
	if err == nil {
		_, err = e.Terms(0) // refused if it expands to too many rules
	}
	if err == nil {
		s.FilterExpr = e
	}
	if err != nil {
		var fe *filter.Error
		if errors.As(err, &fe) && fe.Token != "" {
			p.add(path+".filter", "%q %s", fe.Token, fe.Msg)
		} else if errors.As(err, &fe) {
			p.add(path+".filter", "%s", fe.Msg)
		} else {
			p.add(path+".filter", "%v", err)
		}
	}
}
