package strftime

import (
	"testing"
	"time"
)

func TestFormat(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, c := range []struct{ in, want string }{
		{"/var/lib/nfclone/web-%Y%m%d-%H%M.pcap", "/var/lib/nfclone/web-20260304-0506.pcap"},
		{"x-%y-%j-%S-%s-%%.pcap", "x-26-063-07-1772600767-%.pcap"},
		{"plain.pcap", "plain.pcap"},
		{"odd-%q-%", "odd-%q-%"},
	} {
		if got := Format(c.in, at); got != c.want {
			t.Errorf("Format(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestValidateAndHas(t *testing.T) {
	for _, ok := range []string{"a.pcap", "a-%Y%m%d%H%M%S.pcap", "100%%.pcap", "%j-%s-%y"} {
		if err := Validate(ok); err != nil {
			t.Errorf("Validate(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"a-%q.pcap", "a-%", "%Z"} {
		if Validate(bad) == nil {
			t.Errorf("Validate(%q) accepted", bad)
		}
	}
	if Has("100%%.pcap") || !Has("a-%H.pcap") || Has("a.pcap") {
		t.Error("Has")
	}
}
