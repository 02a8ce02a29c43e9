package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of ports; a single port has Lo == Hi.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// ParsePorts parses "80", "80,443", "1024-65535" or a mix ("22,8000-8100").
func ParsePorts(s string) ([]PortRange, error) {
	var out []PortRange
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("empty port list")
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parsePort(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parsePort(hi); err != nil {
				return nil, err
			}
			if b < a {
				return nil, fmt.Errorf("range %q ends before it starts", part)
			}
		}
		out = append(out, PortRange{a, b})
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %d is out of range 1-65535", n)
	}
	return uint16(n), nil
}

// ParsePrefix parses a CIDR or a bare address (taken as a host prefix). The
// result is masked: 10.1.2.3/8 becomes 10.0.0.0/8.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (like 10.0.0.0/8 or fd00::/8)", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Rate is a rate limit in packets, or in bytes (Bytes set; Count is then
// bytes per Unit), as nft's `limit rate`.
type Rate struct {
	Count uint64
	Unit  string // second | minute | hour | day
	Bytes bool
}

// String is the rate in nft's words: "20000/second", "10 mbytes/second".
func (r Rate) String() string {
	if !r.Bytes {
		return fmt.Sprintf("%d/%s", r.Count, r.Unit)
	}
	n, u := r.Count, "bytes"
	for _, x := range []string{"kbytes", "mbytes"} {
		if n%1024 != 0 {
			break
		}
		n, u = n/1024, x
	}
	return fmt.Sprintf("%d %s/%s", n, u, r.Unit)
}

// rateByteUnits are nft's byte units (binary multiples, as nft).
var rateByteUnits = map[string]uint64{"bytes": 1, "kbytes": 1 << 10, "mbytes": 1 << 20}

// ParseRate parses a packet rate "20000/second" (also "/s", "/sec",
// "/minute", "/hour", "/day") or, as nft, a byte rate "10 mbytes/second"
// (bytes, kbytes = 1024 bytes, mbytes = 1024 kbytes).
func ParseRate(s string) (Rate, error) {
	n, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, fmt.Errorf("%q is not a rate like 20000/second or 10 mbytes/second", s)
	}
	n = strings.TrimSpace(n)
	mult, bytes := uint64(1), false
	if f := strings.Fields(n); len(f) == 2 {
		m, known := rateByteUnits[strings.ToLower(f[1])]
		if !known {
			return Rate{}, fmt.Errorf("%q: %q is not bytes, kbytes or mbytes", s, f[1])
		}
		n, mult, bytes = f[0], m, true
	}
	c, err := strconv.ParseUint(n, 10, 32)
	if err != nil || c == 0 {
		return Rate{}, fmt.Errorf("%q: the count must be a positive number", s)
	}
	switch strings.TrimSpace(unit) {
	case "s", "sec", "second":
		unit = "second"
	case "m", "min", "minute":
		unit = "minute"
	case "h", "hour":
		unit = "hour"
	case "d", "day":
		unit = "day"
	default:
		return Rate{}, fmt.Errorf("%q: unit must be second, minute, hour or day", s)
	}
	return Rate{Count: c * mult, Unit: unit, Bytes: bytes}, nil
}

// ParseSize parses a size into bytes: SI with B (100MB = 100·10^6, kB,
// GB, TB), binary with iB (100MiB = 100·2^20, KiB, GiB, TiB), a bare K, M,
// G or T as binary (512k = 512 KiB, as ls -h), or a number of bytes.
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"TIB", 1 << 40}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size like 100MB", s)
	}
	return n * mult, nil
}

// ParseRemote parses "host:port" for tunnel targets (host is an IP address).
func ParseRemote(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(strings.TrimSpace(s))
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return netip.AddrPort{}, fmt.Errorf("%q has no port", s)
		}
		return netip.AddrPort{}, fmt.Errorf("%q is not address:port", s)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %q is not an IP address", s, host)
	}
	p, err := parsePort(port)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %v", s, err)
	}
	return netip.AddrPortFrom(a.Unmap(), p), nil
}

// Protocol numbers for the protocol keywords.
var protocolNumbers = map[string]uint8{"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132}

// ParseProtocol returns the IP protocol number of a rule's protocol ("" and
// "any" give ok=false: no protocol match).
func ParseProtocol(s string) (proto uint8, ok bool, err error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" || s == "any" {
		return 0, false, nil
	}
	if n, found := protocolNumbers[s]; found {
		return n, true, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 {
		return 0, false, fmt.Errorf("%q is not tcp, udp, icmp, icmpv6, any or a number 0-255", s)
	}
	return uint8(n), true, nil
}
