package statusapi

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nfclone/nfclone/pipeline"
	"github.com/nfclone/nfclone/status"
)

// TopFrame is one screen of `nfclone top`: the status now and the one
// before it (for the rates), or the error fetching it.
type TopFrame struct {
	Prev   *status.Status // nil: no rates yet
	PrevAt time.Time
	Cur    status.Status
	CurAt  time.Time
	Err    error  // the daemon did not answer: shown instead of Cur
	Width  int    // truncate lines to this many columns (0: no limit)
	Hint   string // shown at the end of the first line ("q quits")
}

// WriteTop renders a frame as plain text: a header, one row per session
// (copies/s, seen/s, drops/s, queue depth, totals), the drops per second
// by reason, one row per target (sent/s, errors/s, totals, last error) and
// the interfaces sessions are waiting for. Rates are the counters'
// increase between Prev and Cur over the time between them; a counter
// that went down (the daemon restarted) has no rate ("-").
func WriteTop(w io.Writer, f TopFrame) error {
	var b strings.Builder
	s := f.Cur
	clock := f.CurAt.Format("15:04:05")
	if f.Err != nil {
		fmt.Fprintf(&b, "nfclone top  %s", clock)
		if f.Hint != "" {
			b.WriteString("  " + f.Hint)
		}
		fmt.Fprintf(&b, "\n\nno answer from nfclone: %v\n", f.Err)
		return writeLines(w, b.String(), f.Width)
	}
	version := s.Version
	if version == "" {
		version = "unknown"
	}
	fmt.Fprintf(&b, "nfclone %s  pid %d  up %s  generation %d  %s", version, s.PID, uptime(s.Started, f.CurAt), s.Generation, clock)
	if f.Hint != "" {
		b.WriteString("  " + f.Hint)
	}
	b.WriteString("\n")
	if r := s.LastReload; r != nil && !r.OK {
		fmt.Fprintf(&b, "last reload FAILED (the previous configuration still runs): %s\n", r.Error)
	}

	secs := f.CurAt.Sub(f.PrevAt).Seconds()
	prevSessions := map[string]*status.SessionStatus{}
	if f.Prev != nil && f.Prev.PID == s.PID && secs > 0 {
		for i := range f.Prev.Sessions {
			prevSessions[f.Prev.Sessions[i].Name] = &f.Prev.Sessions[i]
		}
	}
	rate := func(cur uint64, prev *uint64) string {
		if prev == nil || cur < *prev {
			return "-"
		}
		return perSecond(float64(cur-*prev) / secs)
	}

	b.WriteString("\n")
	if len(s.Sessions) == 0 {
		b.WriteString("no sessions\n")
	} else {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SESSION\tMETHOD\tSTATE\tCOPIES/S\tBIT/S\tSEEN/S\tDROPS/S\tQUEUE\tCOPIED\tDROPPED\t")
		var reasons []string
		for _, ss := range s.Sessions {
			p := prevSessions[ss.Name]
			var pCopied, pBytes, pSeen, pDrops *uint64
			var pLedger *pipeline.Snapshot
			if p != nil {
				pCopied, pBytes, pSeen = &p.Copied.Packets, &p.Copied.Bytes, &p.Seen.Packets
				if p.Ledger != nil {
					pLedger = p.Ledger
					t := p.Ledger.Drops.Total()
					pDrops = &t
				}
			}
			state := ss.State
			if len(ss.Missing) > 0 {
				state += " (" + strings.Join(ss.Missing, ",") + " missing)"
			}
			if len(ss.MissingRoutes) > 0 {
				state += fmt.Sprintf(" (%d route(s) missing)", len(ss.MissingRoutes))
			}
			drops, dropped, queue := "-", "-", "-"
			if l := ss.Ledger; l != nil {
				drops = rate(l.Drops.Total(), pDrops)
				dropped = num(l.Drops.Total())
				if r := reasonRates(l.Drops, pLedger, secs); r != "" {
					reasons = append(reasons, "  "+ss.Name+": "+r)
				}
			}
			if q := ss.Queue; q != nil {
				queue = fmt.Sprintf("%d/%d", q.Depth, q.Cap)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
				ss.Name, methodCell(ss), state, rate(ss.Copied.Packets, pCopied), bitsRate(ss.Copied.Bytes, pBytes, secs),
				rate(ss.Seen.Packets, pSeen), drops, queue, num(ss.Copied.Packets), dropped)
		}
		tw.Flush()
		if len(reasons) > 0 {
			b.WriteString("\ndrops/s by reason:\n")
			b.WriteString(strings.Join(reasons, "\n"))
			b.WriteString("\n")
		}

		b.WriteString("\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TARGET\tKIND\tSESSION\tSENT/S\tERRORS/S\tSENT\tERRORS\tLAST ERROR\t")
		for _, ss := range s.Sessions {
			p := prevSessions[ss.Name]
			for i, t := range ss.Targets {
				if t.Stats == nil {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.Name, t.Kind, ss.Name, "(kernel)", "-", "-", "-", "")
					continue
				}
				var pSent, pErr *uint64
				if p != nil && i < len(p.Targets) && p.Targets[i].Name == t.Name && p.Targets[i].Stats != nil {
					pSent, pErr = &p.Targets[i].Stats.Sent, &p.Targets[i].Stats.Errors
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.Name, t.Kind, ss.Name,
					rate(t.Stats.Sent, pSent), rate(t.Stats.Errors, pErr), num(t.Stats.Sent), num(t.Stats.Errors), t.Stats.LastError)
			}
		}
		tw.Flush()
	}

	var waiting []string
	for _, i := range s.Interfaces {
		if !i.Present {
			m := i.Name
			if len(i.UsedBy) > 0 {
				m += " (" + strings.Join(i.UsedBy, ", ") + " waiting)"
			}
			waiting = append(waiting, m)
		}
	}
	if len(waiting) > 0 {
		fmt.Fprintf(&b, "\ninterfaces missing: %s\n", strings.Join(waiting, "; "))
	} else if len(s.Interfaces) > 0 {
		fmt.Fprintf(&b, "\ninterfaces: all %d present\n", len(s.Interfaces))
	}
	if len(s.Drift) > 0 {
		fmt.Fprintf(&b, "routing not as planned: %d item(s) (nfclone status lists them)\n", len(s.Drift))
	}
	return writeLines(w, b.String(), f.Width)
}

// reasonRates lists the reasons with drops, as "reason N/s" (or the total
// when there is no previous snapshot).
func reasonRates(d pipeline.Drops, prev *pipeline.Snapshot, secs float64) string {
	var parts []string
	var p pipeline.Drops
	if prev != nil {
		p = prev.Drops
	}
	for _, r := range []struct {
		name      string
		cur, prev uint64
	}{
		{"kernel_queue", d.KernelQueue, p.KernelQueue},
		{"user", d.User, p.User},
		{"socket_overrun", d.SocketOverrun, p.SocketOverrun},
		{"queue_overflow", d.QueueOverflow, p.QueueOverflow},
		{"rate_limit", d.RateLimit, p.RateLimit},
		{"malformed", d.Malformed, p.Malformed},
		{"send_error", d.SendError, p.SendError},
		{"too_big", d.TooBig, p.TooBig},
		{"kernel_lost", d.KernelLost, p.KernelLost},
	} {
		switch {
		case r.cur == 0:
		case prev == nil || r.cur < r.prev:
			parts = append(parts, fmt.Sprintf("%s - (total %s)", r.name, num(r.cur)))
		case r.cur > r.prev:
			parts = append(parts, fmt.Sprintf("%s %s/s (total %s)", r.name, perSecond(float64(r.cur-r.prev)/secs), num(r.cur)))
		}
	}
	return strings.Join(parts, ", ")
}

// perSecond prints a rate with at most 3 significant digits and a k/M/G
// suffix: 0, 7, 12.5, 950, 1.25k, 48.2M.
func perSecond(v float64) string {
	if v == 0 {
		return "0"
	}
	suffix := ""
	for _, s := range []string{"k", "M", "G"} {
		if v < 999.5 {
			break
		}
		v /= 1000
		suffix = s
	}
	if suffix == "" && v < 0.005 {
		return "<0.01"
	}
	return strconv.FormatFloat(v, 'g', 3, 64) + suffix
}

// bitsRate prints a byte counter's increase as bits per second.
func bitsRate(cur uint64, prev *uint64, secs float64) string {
	if prev == nil || cur < *prev {
		return "-"
	}
	return perSecond(8 * float64(cur-*prev) / secs)
}

// writeLines writes text without the tabwriter's trailing spaces, each
// line cut to width runes when width > 0.
func writeLines(w io.Writer, text string, width int) error {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if width > 0 {
			if r := []rune(l); len(r) > width {
				l = string(r[:width])
			}
		}
		l = strings.TrimRight(l, " ")
		lines[i] = l
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n"))
	return err
}
