package config

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestParsePorts(t *testing.T) {
	cases := []struct {
		in   string
		want []PortRange
		err  string
	}{
		{in: "80", want: []PortRange{{80, 80}}},
		{in: "80,443", want: []PortRange{{80, 80}, {443, 443}}},
		{in: " 80 , 443 ", want: []PortRange{{80, 80}, {443, 443}}},
		{in: "1024-65535", want: []PortRange{{1024, 65535}}},
		{in: "1-65535", want: []PortRange{{1, 65535}}},
		{in: "22,8000-8100,53", want: []PortRange{{22, 22}, {8000, 8100}, {53, 53}}},
		{in: "80-80", want: []PortRange{{80, 80}}},
		{in: "8000 - 8100", want: []PortRange{{8000, 8100}}},
		{in: "443,80,443", want: []PortRange{{443, 443}, {80, 80}, {443, 443}}}, // kept as written; the compiler merges
		{in: "", err: "empty port list"},
		{in: "  ", err: "empty port list"},
		{in: "0", err: "port 0 is out of range 1-65535"},
		{in: "65536", err: "port 65536 is out of range 1-65535"},
		{in: "70000", err: "port 70000 is out of range 1-65535"},
		{in: "-1", err: `"" is not a port number`},
		{in: "90-80", err: `range "90-80" ends before it starts`},
		{in: "80-", err: `"" is not a port number`},
		{in: "80,,443", err: `"" is not a port number`},
		{in: "80,", err: `"" is not a port number`},
		{in: "http", err: `"http" is not a port number`},
		{in: "1-2-3", err: `"2-3" is not a port number`},
		{in: "0x50", err: `"0x50" is not a port number`},
		{in: "99999999999999999999", err: `"99999999999999999999" is not a port number`},
	}
	for _, tc := range cases {
		got, err := ParsePorts(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParsePorts(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParsePorts(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestPortRangeString(t *testing.T) {
	for r, want := range map[PortRange]string{{80, 80}: "80", {1, 65535}: "1-65535", {53, 54}: "53-54"} {
		if got := r.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", r, got, want)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	cases := []struct {
		in, want, err string
	}{
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "10.1.2.3/8", want: "10.0.0.0/8"}, // masked
		{in: " 10.1.2.3 ", want: "10.1.2.3/32"},
		{in: "0.0.0.0/0", want: "0.0.0.0/0"},
		{in: "fd00::/8", want: "fd00::/8"},
		{in: "fd00::1234/8", want: "fd00::/8"},
		{in: "fd77:1::2", want: "fd77:1::2/128"},
		{in: "::/0", want: "::/0"},
		{in: "192.168.1.1/32", want: "192.168.1.1/32"},
		{in: "10.0.0.0/33", err: `"10.0.0.0/33" is not a CIDR (like 10.0.0.0/8 or fd00::/8)`},
		{in: "fd00::/129", err: `"fd00::/129" is not a CIDR (like 10.0.0.0/8 or fd00::/8)`},
		{in: "10.0.0.0/", err: `"10.0.0.0/" is not a CIDR (like 10.0.0.0/8 or fd00::/8)`},
		{in: "host/8", err: `"host/8" is not a CIDR (like 10.0.0.0/8 or fd00::/8)`},
		{in: "fe80::1%eth0", err: `"fe80::1%eth0" is not an address or CIDR`},
		{in: "10.0.0", err: `"10.0.0" is not an address or CIDR`},
		{in: "", err: `"" is not an address or CIDR`},
		{in: "example.org", err: `"example.org" is not an address or CIDR`},
	}
	for _, tc := range cases {
		got, err := ParsePrefix(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParsePrefix(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != netip.MustParsePrefix(tc.want) {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestParseRate(t *testing.T) {
	cases := []struct {
		in   string
		want Rate
		err  string
	}{
		{in: "20000/second", want: Rate{Count: 20000, Unit: "second"}},
		{in: "1/s", want: Rate{Count: 1, Unit: "second"}},
		{in: "5/sec", want: Rate{Count: 5, Unit: "second"}},
		{in: " 7 / minute ", want: Rate{Count: 7, Unit: "minute"}},
		{in: "7/m", want: Rate{Count: 7, Unit: "minute"}},
		{in: "7/min", want: Rate{Count: 7, Unit: "minute"}},
		{in: "3/h", want: Rate{Count: 3, Unit: "hour"}},
		{in: "3/hour", want: Rate{Count: 3, Unit: "hour"}},
		{in: "2/d", want: Rate{Count: 2, Unit: "day"}},
		{in: "2/day", want: Rate{Count: 2, Unit: "day"}},
		{in: "4294967295/second", want: Rate{Count: 4294967295, Unit: "second"}},
		{in: "4294967296/second", err: `"4294967296/second": the count must be a positive number`},
		{in: "0/second", err: `"0/second": the count must be a positive number`},
		{in: "-1/second", err: `"-1/second": the count must be a positive number`},
		{in: "x/second", err: `"x/second": the count must be a positive number`},
		{in: "10/week", err: `"10/week": unit must be second, minute, hour or day`},
		{in: "10/", err: `"10/": unit must be second, minute, hour or day`},
		{in: "10/Second", err: `"10/Second": unit must be second, minute, hour or day`},
		{in: "10", err: `"10" is not a rate like 20000/second or 10 mbytes/second`},
		{in: "", err: `"" is not a rate like 20000/second or 10 mbytes/second`},
		{in: "10 mbytes/second", want: Rate{Count: 10 << 20, Unit: "second", Bytes: true}},
		{in: "512 kbytes/s", want: Rate{Count: 512 << 10, Unit: "second", Bytes: true}},
		{in: "1500 bytes/minute", want: Rate{Count: 1500, Unit: "minute", Bytes: true}},
		{in: "10 MBytes/second", want: Rate{Count: 10 << 20, Unit: "second", Bytes: true}},
		{in: "10 mb/second", err: `"10 mb/second": "mb" is not bytes, kbytes or mbytes`},
	}
	for _, tc := range cases {
		got, err := ParseRate(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseRate(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if s := (Rate{Count: 20000, Unit: "second"}).String(); s != "20000/second" {
		t.Errorf("Rate.String() = %q", s)
	}
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		err  bool
	}{
		{in: "4096", want: 4096},
		{in: "1B", want: 1},
		{in: "100MB", want: 100_000_000},
		{in: "100mb", want: 100_000_000},
		{in: "100 MB", want: 100_000_000},
		{in: "1KB", want: 1000},
		{in: "1GB", want: 1_000_000_000},
		{in: "1KiB", want: 1024},
		{in: "1MiB", want: 1 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "512k", want: 512 << 10},
		{in: "3M", want: 3 << 20},
		{in: "2G", want: 2 << 30},
		{in: "4294967296G", want: 4294967296 << 30}, // 2^62, the largest allowed
		{in: "4294967297G", err: true},
		{in: "9223372036854775807", err: true}, // above 2^62 bytes
		{in: "0", err: true},
		{in: "0MB", err: true},
		{in: "-5MB", err: true},
		{in: "1.5GB", err: true},
		{in: "MB", err: true},
		{in: "", err: true},
		{in: "10TB", want: 10_000_000_000_000},
		{in: "10PB", err: true},
		{in: "huge", err: true},
	}
	for _, tc := range cases {
		got, err := ParseSize(tc.in)
		if tc.err {
			want := `"` + tc.in + `" is not a size like 100MB`
			if err == nil || err.Error() != want {
				t.Errorf("ParseSize(%q) = %d, %v; want error %q", tc.in, got, err, want)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseRemote(t *testing.T) {
	cases := []struct {
		in, want, err string
	}{
		{in: "10.77.4.2:4789", want: "10.77.4.2:4789"},
		{in: " 10.77.4.2:6081 ", want: "10.77.4.2:6081"},
		{in: "[fd77:4::2]:4789", want: "[fd77:4::2]:4789"},
		{in: "[::ffff:10.77.4.2]:4789", want: "10.77.4.2:4789"}, // v4-mapped is unmapped
		{in: "10.77.4.2:65535", want: "10.77.4.2:65535"},
		{in: "10.77.4.2", err: `"10.77.4.2" has no port`},
		{in: "[fd77:4::2]", err: `"[fd77:4::2]" has no port`},
		{in: "fd77:4::2", err: `"fd77:4::2" is not address:port`},
		{in: "fd77:4::2:4789", err: `"fd77:4::2:4789" is not address:port`},
		{in: "collector:4789", err: `"collector:4789": "collector" is not an IP address`},
		{in: ":4789", err: `":4789": "" is not an IP address`},
		{in: "10.77.4.2:0", err: `"10.77.4.2:0": port 0 is out of range 1-65535`},
		{in: "10.77.4.2:65536", err: `"10.77.4.2:65536": port 65536 is out of range 1-65535`},
		{in: "10.77.4.2:vxlan", err: `"10.77.4.2:vxlan": "vxlan" is not a port number`},
		{in: "10.77.4.2:", err: `"10.77.4.2:": "" is not a port number`},
	}
	for _, tc := range cases {
		got, err := ParseRemote(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseRemote(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != netip.MustParseAddrPort(tc.want) {
			t.Errorf("ParseRemote(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestParseProtocol(t *testing.T) {
	cases := []struct {
		in    string
		proto uint8
		ok    bool
		err   string
	}{
		{in: ""},
		{in: "any"},
		{in: " ANY "},
		{in: "tcp", proto: 6, ok: true},
		{in: "TCP", proto: 6, ok: true},
		{in: "udp", proto: 17, ok: true},
		{in: "icmp", proto: 1, ok: true},
		{in: "icmpv6", proto: 58, ok: true},
		{in: "sctp", proto: 132, ok: true},
		{in: "0", proto: 0, ok: true},
		{in: "47", proto: 47, ok: true},
		{in: "255", proto: 255, ok: true},
		{in: "256", err: `"256" is not tcp, udp, icmp, icmpv6, any or a number 0-255`},
		{in: "-1", err: `"-1" is not tcp, udp, icmp, icmpv6, any or a number 0-255`},
		{in: "gre", err: `"gre" is not tcp, udp, icmp, icmpv6, any or a number 0-255`},
		{in: "ipv6-icmp", err: `"ipv6-icmp" is not tcp, udp, icmp, icmpv6, any or a number 0-255`},
	}
	for _, tc := range cases {
		p, ok, err := ParseProtocol(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err || ok {
				t.Errorf("ParseProtocol(%q) = %d, %v, %v; want error %q", tc.in, p, ok, err, tc.err)
			}
			continue
		}
		if err != nil || p != tc.proto || ok != tc.ok {
			t.Errorf("ParseProtocol(%q) = %d, %v, %v; want %d, %v", tc.in, p, ok, err, tc.proto, tc.ok)
		}
	}
}

func TestSourceDirections(t *testing.T) {
	for in, want := range map[Direction][]Direction{
		"both": {"ingress", "egress"}, "ingress": {"ingress"}, "egress": {"egress"}, "": {"ingress"},
	} {
		if got := SourceDirections(in); !reflect.DeepEqual(got, want) {
			t.Errorf("SourceDirections(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestSortedRules(t *testing.T) {
	in := []Rule{{Number: 300}, {Number: 100, Action: "a"}, {Number: 200}, {Number: 100, Action: "b"}}
	got := SortedRules(in)
	want := []Rule{{Number: 100, Action: "a"}, {Number: 100, Action: "b"}, {Number: 200}, {Number: 300}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SortedRules = %v", got)
	}
	if in[0].Number != 300 {
		t.Error("SortedRules modified its argument")
	}
}

// Rate.String is nft's spelling, so render matches `nft list`.
func TestRateString(t *testing.T) {
	for in, want := range map[string]string{"10 mbytes/second": "10 mbytes/second", "1536 kbytes/s": "1536 kbytes/second",
		"1500 bytes/minute": "1500 bytes/minute", "20000/sec": "20000/second", "2048 bytes/s": "2 kbytes/second"} {
		r, err := ParseRate(in)
		if err != nil || r.String() != want {
			t.Errorf("%q: %q %v, want %q", in, r.String(), err, want)
		}
	}
}

// Sizes: SI (100MB = 100·10^6) and binary (100MiB = 100·2^20) both.
func TestParseSizeSIAndBinary(t *testing.T) {
	for in, want := range map[string]int64{"100MB": 100_000_000, "100MiB": 100 << 20, "1GB": 1_000_000_000, "1GiB": 1 << 30,
		"512kB": 512_000, "512KiB": 512 << 10, "4096": 4096, "2TB": 2_000_000_000_000, "2TiB": 2 << 40} {
		if n, err := ParseSize(in); err != nil || n != want {
			t.Errorf("ParseSize(%q) = %d %v, want %d", in, n, err, want)
		}
	}
}
