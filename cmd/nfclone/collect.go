package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nfclone/nfclone/collect"
)

// collectProgressEvery is how often collect looks at its counters while it
// runs.
const collectProgressEvery = time.Second

// collectProgress prints a line on w whenever a counter of trouble (denied
// senders, malformed datagrams, other VNIs, write errors) changed since the
// last look, with the last denied sender and decode error: a collector that
// drops everything says so while it runs, not only at exit. It returns
// when ctx ends.
func collectProgress(ctx context.Context, w io.Writer, c *collect.Collector, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var last collect.Stats
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := c.Stats()
		if st.DeniedSender == last.DeniedSender && st.Malformed == last.Malformed &&
			st.FilteredVNI == last.FilteredVNI && st.WriteErrors == last.WriteErrors {
			continue
		}
		last = st
		fmt.Fprintln(w, collectLine(st, c))
	}
}

func collectLine(st collect.Stats, c *collect.Collector) string {
	denied, malformed := c.Last()
	var b strings.Builder
	fmt.Fprintf(&b, "nfclone collect: so far received %d, written %d; denied senders %d", st.Received, st.Written, st.DeniedSender)
	if denied.IsValid() {
		fmt.Fprintf(&b, " (last %s, not in --allow)", denied)
	}
	fmt.Fprintf(&b, ", malformed %d", st.Malformed)
	if malformed != nil {
		fmt.Fprintf(&b, " (last: %v)", malformed)
	}
	fmt.Fprintf(&b, ", other VNI %d, write errors %d", st.FilteredVNI, st.WriteErrors)
	return b.String()
}
