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

// WriteTable prints s as a readable table: a header (pid, uptime, rule
// generation, config, last reload), one row per session, the drops by
// reason that are not zero, one row per target and the missing interfaces.
func WriteTable(w io.Writer, s status.Status) error {
	return writeTable(w, s, time.Now())
}

func writeTable(w io.Writer, s status.Status, now time.Time) error {
	var b strings.Builder

	version := s.Version
	if version == "" {
		version = "unknown"
	}
	fmt.Fprintf(&b, "nfclone %s  pid %d  up %s  generation %d", version, s.PID, uptime(s.Started, now), s.Generation)
	if s.Table != "" {
		fmt.Fprintf(&b, "  table %s", s.Table)
	}
	b.WriteString("\n")
	if s.Config != "" {
		fmt.Fprintf(&b, "config %s\n", s.Config)
	}
	if r := s.LastReload; r != nil {
		when := r.Time.UTC().Format(time.RFC3339)
		if r.OK {
			fmt.Fprintf(&b, "last reload: ok at %s\n", when)
		} else {
			// A refused config lists its problems one per line.
			fmt.Fprintf(&b, "last reload: FAILED at %s (the previous configuration still runs):\n  %s\n", when, strings.ReplaceAll(strings.TrimSpace(r.Error), "\n", "\n  "))
		}
	}

	b.WriteString("\n")
	if len(s.Sessions) == 0 {
		b.WriteString("no sessions\n")
	} else {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SESSION\tMETHOD\tSTATE\tSEEN\tCOPIED\tCOPIED BYTES\tOFFERED\tDROPPED\tQUEUE\tWORKERS\tREADERS\t")
		for _, ss := range s.Sessions {
			state := ss.State
			if len(ss.Missing) > 0 {
				state += " (" + strings.Join(ss.Missing, ",") + " missing)"
			}
			if len(ss.MissingRoutes) > 0 {
				state += " (" + strconv.Itoa(len(ss.MissingRoutes)) + " gateway route(s) missing)"
			}
			offered, dropped := "-", "-"
			if l := ss.Ledger; l != nil {
				offered = num(l.Offered)
				dropped = num(l.Drops.Total())
				if l.InFlight > 0 {
					dropped += fmt.Sprintf(" (+%s in flight)", num(l.InFlight))
				}
			}
			queue, workers := "-", "-"
			if q := ss.Queue; q != nil {
				queue = fmt.Sprintf("%d/%d", q.Depth, q.Cap)
				workers = strconv.Itoa(q.Workers)
			}
			readers := "-"
			if len(ss.Readers) > 0 {
				up := 0
				for _, r := range ss.Readers {
					if r.Running {
						up++
					}
				}
				readers = fmt.Sprintf("%d/%d up", up, len(ss.Readers))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
				ss.Name, methodCell(ss), state, num(ss.Seen.Packets), num(ss.Copied.Packets), bytesIEC(ss.Copied.Bytes),
				offered, dropped, queue, workers, readers)
		}
		tw.Flush()

		// Drops by reason, only where some are not zero.
		var drops []string
		for _, ss := range s.Sessions {
			if ss.Ledger == nil || ss.Ledger.Drops.Total() == 0 {
				continue
			}
			drops = append(drops, fmt.Sprintf("  %s: %s", ss.Name, dropReasons(ss.Ledger.Drops)))
		}
		if sel := skippedLines(s.Sessions); len(sel) > 0 {
			b.WriteString("\nnot copied, by selector:\n")
			b.WriteString(strings.Join(sel, "\n"))
			b.WriteString("\n")
		}
		if len(drops) > 0 {
			b.WriteString("\ndrops by reason:\n")
			b.WriteString(strings.Join(drops, "\n"))
			b.WriteString("\n")
		}

		// Targets.
		b.WriteString("\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TARGET\tKIND\tSESSION\tSENT\tBYTES\tERRORS\tLAST ERROR\t")
		for _, ss := range s.Sessions {
			for _, t := range ss.Targets {
				if t.Stats == nil {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.Name, t.Kind, ss.Name, "(kernel)", "-", "-", "")
					if c := t.Tunnel; c != nil {
						fmt.Fprintf(tw, "  cut to %d bytes inside\t\t\t%s cut\t\t%s fragmented\t\t\n", c.InnerMTU, num(c.Cut), num(c.Fragmented))
					}
					continue
				}
				kind := t.Kind
				switch {
				case t.Kernel: // the kernel sends every copy
					kind += " (kernel)"
				case t.KernelTCP: // the kernel sends the TCP copies
					kind += " (kernel: tcp)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.Name, kind, ss.Name,
					num(t.Stats.Sent), bytesIEC(t.Stats.Bytes), num(t.Stats.Errors), t.Stats.LastError)
				if c := t.Tunnel; c != nil {
					// The kernel sends into nfclone's VXLAN device: what
					// its segment-size program did.
					fmt.Fprintf(tw, "  cut to %d bytes inside\t\t\t%s cut\t\t%s fragmented\t\t\n", c.InnerMTU, num(c.Cut), num(c.Fragmented))
				}
				for _, c := range t.Clients {
					// A pcap-over-ip client: what it was sent, what was
					// dropped for it alone (its buffer was full).
					fmt.Fprintf(tw, "  client %s\t\t\t%s\t%s\t%s dropped\t\t\n", c.Remote,
						num(c.Sent), bytesIEC(c.Bytes), num(c.Dropped))
				}
			}
		}
		tw.Flush()
	}

	var missing, all []string
	for _, i := range s.Interfaces {
		n := i.Name
		if i.Created {
			n += " (created)"
		}
		all = append(all, n)
		if !i.Present {
			m := i.Name
			if len(i.UsedBy) > 0 {
				m += " (used by " + strings.Join(i.UsedBy, ", ") + ")"
			}
			missing = append(missing, m)
		}
	}
	if len(all) > 0 {
		fmt.Fprintf(&b, "\ninterfaces: %s\n", strings.Join(all, ", "))
	}
	if len(missing) > 0 {
		fmt.Fprintf(&b, "interfaces missing: %s\n", strings.Join(missing, "; "))
	} else if len(s.Interfaces) > 0 {
		fmt.Fprintf(&b, "interfaces: all %d present\n", len(s.Interfaces))
	}

	if len(s.Drift) > 0 {
		b.WriteString("\nrouting not as planned (put back when possible):\n")
		for _, d := range s.Drift {
			fmt.Fprintf(&b, "  %s\n", d)
		}
	}

	// Trailing spaces come from the tabwriter's last column.
	lines := strings.Split(b.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n"))
	return err
}

// dropReasons lists the non-zero drops, with the ledger's reason names.
func dropReasons(d pipeline.Drops) string {
	var parts []string
	add := func(name string, v uint64) {
		if v > 0 {
			parts = append(parts, fmt.Sprintf("%s %s", name, num(v)))
		}
	}
	add("kernel_queue", d.KernelQueue)
	add("user", d.User)
	add("socket_overrun", d.SocketOverrun)
	add("queue_overflow", d.QueueOverflow)
	add("rate_limit", d.RateLimit)
	add("malformed", d.Malformed)
	add("send_error", d.SendError)
	add("too_big", d.TooBig)
	add("kernel_lost", d.KernelLost)
	add("dedup", d.Dedup)
	return strings.Join(parts, ", ")
}

func uptime(started, now time.Time) string {
	if started.IsZero() {
		return "?"
	}
	d := now.Sub(started).Round(time.Second)
	if d < 0 {
		d = 0
	}
	if d >= 24*time.Hour {
		days := d / (24 * time.Hour)
		return fmt.Sprintf("%dd%s", days, (d - days*24*time.Hour).String())
	}
	return d.String()
}

// num prints n as is: counters are exact and scripts should use --json.
func num(n uint64) string { return strconv.FormatUint(n, 10) }

// bytesIEC prints a byte count with a binary unit.
func bytesIEC(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// skippedLines: per session, what each selector kept from being copied,
// only where some are not zero.
func skippedLines(sessions []status.SessionStatus) []string {
	var out []string
	for _, ss := range sessions {
		sk := ss.Skipped
		if ss.Ledger != nil {
			sk = &ss.Ledger.Skipped
		}
		if sk == nil || sk.Total() == 0 {
			continue
		}
		var parts []string
		for _, r := range sk.Reasons() {
			if r.Packets > 0 {
				parts = append(parts, fmt.Sprintf("%s %s", r.Name, num(r.Packets)))
			}
		}
		out = append(out, fmt.Sprintf("  %s: %s", ss.Name, strings.Join(parts, ", ")))
	}
	return out
}

// methodCell is the method column: "queue/hold" for a session that holds
// the originals.
func methodCell(ss status.SessionStatus) string {
	if ss.Hold {
		return ss.Method + "/hold"
	}
	return ss.Method
}
