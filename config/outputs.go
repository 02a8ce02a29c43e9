package config

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// ERSPAN session ids are 10 bits; VLAN ids 12 bits (0 and 4095 reserved).
const (
	MaxERSPANSession = 1023
	DefaultERSPAN    = 2
	// DefaultPcapOverIPListen is where a pcap-over-ip target listens when
	// listen gives only a port (":57012"): loopback, unless said otherwise.
	DefaultPcapOverIPHost = "127.0.0.1"
)

// validateOutputTarget checks the keys of the erspan and pcap-over-ip
// kinds and the device targets' vlan; only reports a key set on a kind
// that has no such field.
func validateOutputTarget(p *problems, tp string, s *Session, t *Target, only func(key string, set bool, kinds ...Kind)) {
	only("version", t.Version != 0, KindERSPAN)
	only("session_id", t.SessionID != nil, KindERSPAN)
	only("vlan", t.VLAN != nil, KindDevice)
	only("listen", t.Listen != "", KindPcapOverIP)
	only("allow", len(t.Allow) > 0, KindPcapOverIP)
	if t.VLAN != nil && (*t.VLAN < 1 || *t.VLAN > 4094) {
		p.add(tp+".vlan", "%d is out of range 1-4094", *t.VLAN)
	} else if t.VLAN != nil && s.Method == MethodDup {
		// The kernel's dup cannot push a tag, and a VLAN device needs the
		// 8021q link kind, which this project's kernel lacks ("Unknown
		// device type"), as it lacks tc's vlan action.
		p.add(tp+".vlan", "method dup cannot tag copies (the kernel's dup pushes no 802.1Q tag and this kernel has no vlan link kind to mirror into); use method queue or log, which tag in userspace")
	}
	switch t.Kind {
	case KindERSPAN:
		if s.Method == MethodDup {
			p.add(tp+".kind", "erspan is not available with method dup: this kernel has no gre or erspan link kind to feed; use method queue or log (nfclone builds ERSPAN in userspace)")
		}
		if len(t.Remote) == 0 {
			p.add(tp+".remote", "is required (the collector's IP address, no port: ERSPAN is GRE)")
		}
		for i, r := range t.Remote {
			key := tp + ".remote"
			if len(t.Remote) > 1 {
				key = fmt.Sprintf("%s[%d]", key, i)
			}
			if a, err := ParseERSPANRemote(r); err != nil {
				p.add(key, "%v", err)
			} else {
				t.RemoteAddrs = append(t.RemoteAddrs, netip.AddrPortFrom(a, 0))
			}
		}
		switch t.Version {
		case 0:
			t.Version = DefaultERSPAN
		case 2, 3:
		default:
			p.add(tp+".version", "%d is not 2 (ERSPAN type II) or 3 (type III)", t.Version)
		}
		if t.SessionID == nil {
			p.add(tp+".session_id", "is required (0-%d)", MaxERSPANSession)
		} else if *t.SessionID < 0 || *t.SessionID > MaxERSPANSession {
			p.add(tp+".session_id", "%d is out of range 0-%d", *t.SessionID, MaxERSPANSession)
		}
	case KindPcapOverIP:
		if s.Method == MethodDup {
			p.add(tp+".kind", "pcap-over-ip is not available with method dup (the kernel cannot write it); use method queue or log")
		}
		if t.Listen == "" {
			p.add(tp+".listen", "is required (ADDR:PORT, or :PORT for %s)", DefaultPcapOverIPHost)
		} else if ap, err := ParsePcapOverIPListen(t.Listen); err != nil {
			p.add(tp+".listen", "%v", err)
		} else {
			t.ListenAddr = ap
		}
		for i, a := range t.Allow {
			if pf, err := ParseAllowPrefix(a); err != nil {
				p.add(fmt.Sprintf("%s.allow[%d]", tp, i), "%v", err)
			} else {
				t.AllowPrefixes = append(t.AllowPrefixes, pf) // the invalid prefix: any
			}
		}
		switch t.Format {
		case "", FormatPcap, FormatPcapng:
		default:
			p.add(tp+".format", "%q is not pcap or pcapng", t.Format)
		}
		if ap, err := ParsePcapOverIPListen(t.Listen); err == nil && !ap.Addr().IsLoopback() && len(t.Allow) == 0 {
			p.add(tp+".allow", "listen %s is reachable from other hosts: say who may read the copies (allow: [CIDR, ...], or [any])", t.Listen)
		}
	}
}

// ParseERSPANRemote parses an erspan target's remote: an IP address
// without a port.
func ParseERSPANRemote(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address (ERSPAN is GRE: no port)", s)
	}
	a = a.Unmap()
	if a.IsUnspecified() || a.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("%q is not a unicast address", s)
	}
	return a, nil
}

// ParsePcapOverIPListen parses a pcap-over-ip target's listen: host:port
// with an IP address host, or :port for loopback (DefaultPcapOverIPHost).
func ParsePcapOverIPListen(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(strings.TrimSpace(s))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not ADDR:PORT (e.g. 127.0.0.1:57012, :57012)", s)
	}
	if host == "" {
		host = DefaultPcapOverIPHost
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%q: %q is not an IP address", s, host)
	}
	pn, err := parsePort(port)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %v", s, err)
	}
	if pn == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q: port 0 (clients need to know the port)", s)
	}
	return netip.AddrPortFrom(a.Unmap(), pn), nil
}

// ParseAllowPrefix parses one allow entry: a CIDR, an address (/32,
// /128) or "any" (0.0.0.0/0, returned as an invalid prefix with no error).
func ParseAllowPrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "any" {
		return netip.Prefix{}, nil
	}
	if pf, err := netip.ParsePrefix(s); err == nil {
		return pf.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is not a CIDR, an address or any", s)
}

// Bounds of a session's dedup window.
const (
	MinDedup = time.Millisecond
	MaxDedup = 10 * time.Second
)

// validateDedup checks a session's dedup window.
func validateDedup(p *problems, path string, s *Session) {
	if s.Dedup == "" {
		return
	}
	d, err := ParseDedup(s.Dedup)
	switch {
	case err != nil:
		p.add(path+".dedup", "%v", err)
	case d < MinDedup || d > MaxDedup:
		p.add(path+".dedup", "%q is out of range %v-%v", s.Dedup, MinDedup, MaxDedup)
	case s.Method == MethodDup:
		p.add(path+".dedup", "method dup copies in the kernel, which cannot de-duplicate; use method queue or log")
	default:
		s.DedupWindow = d
	}
}

// ParseDedup parses a dedup window ("50ms").
func ParseDedup(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration like 50ms", s)
	}
	return d, nil
}

// validateListens refuses two pcap-over-ip targets on one address, or one
// on the metrics address: the servers use SO_REUSEPORT (a reload opens the
// new one before closing the old), so the kernel would not refuse them and
// would split the clients between them.
func validateListens(p *problems, c *Config) {
	seen := map[netip.AddrPort]string{}
	if ap, err := ParsePcapOverIPListen(c.Metrics.Listen); err == nil && c.Metrics.Listen != "" {
		seen[ap] = "metrics.listen"
	}
	for i, s := range c.Sessions {
		for j, t := range s.Targets {
			if t.Kind != KindPcapOverIP {
				continue
			}
			ap, err := ParsePcapOverIPListen(t.Listen)
			if err != nil {
				continue
			}
			key := fmt.Sprintf("sessions[%d].targets[%d].listen", i, j)
			if other, dup := seen[ap]; dup {
				p.add(key, "%s is already the address of %s", ap, other)
				continue
			}
			seen[ap] = key
		}
	}
}
