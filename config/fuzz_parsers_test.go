package config

import (
	"strings"
	"testing"
)

// FuzzParsers feeds one string to every value parser: they return a value or
// an error, never panic, and what they accept is consistent.
func FuzzParsers(f *testing.F) {
	for _, s := range []string{"80", "80,443", "1024-65535", "0", "70000", "90-80", ",,", "10.0.0.0/8", "fd00::/8",
		"10.77.4.2:4789", "[fd77:4::2]:6081", "20000/second", "1/d", "100MB", "1GiB", "-1", "١٢٣", "tcp", "256", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if rs, err := ParsePorts(s); err == nil {
			for _, r := range rs {
				if r.Lo == 0 || r.Lo > r.Hi {
					t.Fatalf("ParsePorts(%q) accepted %v", s, r)
				}
			}
		}
		if p, err := ParsePrefix(s); err == nil && !p.IsValid() {
			t.Fatalf("ParsePrefix(%q) gave an invalid prefix", s)
		}
		if r, err := ParseRate(s); err == nil && (r.Count == 0 || r.Unit == "") {
			t.Fatalf("ParseRate(%q) = %v", s, r)
		}
		if n, err := ParseSize(s); err == nil && n <= 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if ap, err := ParseRemote(s); err == nil && (ap.Port() == 0 || !ap.Addr().IsValid()) {
			t.Fatalf("ParseRemote(%q) = %v", s, ap)
		} else if err != nil && strings.TrimSpace(err.Error()) == "" {
			t.Fatalf("ParseRemote(%q): empty error", s)
		}
		_, _, _ = ParseProtocol(s)
	})
}
