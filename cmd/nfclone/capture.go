package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nfclone/nfclone/config"
)

// captureConfig builds the capture's config from its flags and trailing
// arguments (a tcpdump filter expression), checks it against the host, and
// returns it with the function that puts later problems into the flags'
// words. -i any becomes every interface that is up, except lo.
func captureConfig(o *config.CaptureOptions, args []string) (*config.Config, func(config.Errors) config.Errors, error) {
	if err := expandAny(o); err != nil {
		return nil, nil, err
	}
	o.Filter = strings.Join(args, " ")
	words := func(errs config.Errors) config.Errors { return config.CaptureWords(errs, *o) }
	c, err := config.Capture(*o, os.Getpid())
	if err != nil {
		return nil, nil, inWords("capture", err, words)
	}
	if err := hostCheck(c, nil); err != nil { // a fresh state directory: nothing left
		return nil, nil, inWords("capture", err, words)
	}
	return c, words, nil
}

// expandAny replaces -i any with the interfaces that are up, lo excepted
// (as tcpdump's any, without the loopback chatter): each is hooked by name
// in the capture's chains, and the "capturing on" line lists them.
func expandAny(o *config.CaptureOptions) error {
	var out []string
	any := false
	for _, v := range o.Interfaces {
		for _, n := range strings.Split(v, ",") {
			switch n = strings.TrimSpace(n); {
			case n == "any":
				any = true
			case n != "":
				out = append(out, n)
			}
		}
	}
	if !any {
		return nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("-i any: listing interfaces: %w", err)
	}
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 || slices.Contains(out, ifi.Name) {
			continue
		}
		out = append(out, ifi.Name)
	}
	if len(out) == 0 {
		return usageError{fmt.Errorf("-i any: no interface is up besides lo (name lo to capture on it: -i lo)")}
	}
	o.Interfaces = out
	return nil
}

// secondsFlag is a duration flag that also takes a bare number of seconds
// (--duration 5, as timeout(1) and tcpdump's -G), or a Go duration (30s, 2m).
type secondsFlag struct{ d *time.Duration }

func (f secondsFlag) Set(v string) error {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if n < 0 || n > 1e9 {
			return fmt.Errorf("%q: want a number of seconds from 0 to 1e9", v)
		}
		*f.d = time.Duration(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("%q is not a number of seconds (5) or a duration (30s, 2m)", v)
	}
	*f.d = d
	return nil
}

func (f secondsFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return "0"
	}
	return f.d.String()
}

func (f secondsFlag) Type() string { return "seconds" }

// captureNotes says what a tcpdump user may expect and not get: on which
// interface a packet was seen is recorded only in pcapng, and only by log.
func captureNotes(w io.Writer, c *config.Config, o config.CaptureOptions) {
	if len(c.Sessions) == 0 || len(c.Sessions[0].Sources) < 2 {
		return
	}
	switch {
	case o.Format != "pcapng":
		fmt.Fprintln(w, "nfclone: note: a pcap file does not say on which interface each packet was seen; --format pcapng records it, with the direction")
	case c.Sessions[0].Method != config.MethodLog:
		fmt.Fprintln(w, "nfclone: note: with --method queue the pcapng file does not say on which interface each packet was seen (--method log does)")
	}
}
