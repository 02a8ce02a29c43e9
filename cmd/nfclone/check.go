package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/engine"
	"github.com/nfclone/nfclone/gsotrim"
	"github.com/nfclone/nfclone/rules"
)

// checkCommand is `nfclone check`: the config against this host and kernel.
func checkCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check -c FILE",
		Short: "Validate the config against this host and its kernel",
		Example: `  nfclone check -c mirror.yaml && echo ok
  ip netns exec eng nfclone check -c mirror.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.load()
			if err != nil {
				return err
			}
			return check(g.stdout, c)
		},
	}
	g.configFlag(cmd)
	return cmd
}

// check validates a loaded config against this host and its kernel. Every
// problem is collected first; warnings and what was found are printed, and
// the "ok" lines only when nothing is wrong: check never says ok and then
// lists problems.
func check(w io.Writer, c *config.Config) error {
	mtuNotes := config.KernelRouteMTU(c, config.SystemMTU, config.SystemTunnelPathMTU, gsotrim.Supported() == nil) // before anything asks who sends
	// Interfaces in the state file are nfclone's (a running or killed run
	// made them): create: true is no problem for them.
	errs := append(config.CheckHost(c, config.SystemHost{}, leftLinks(c.StateDir)), config.CheckFiles(c)...)
	for _, warn := range append(append(config.Warnings(c), config.ARPWarnings(c, config.SystemHost{})...), mtuNotes...) {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	f, err := engine.ProbeKernel(c.Table)
	if err != nil {
		if len(errs) > 0 {
			errs = append(errs, config.Problem{Path: "kernel", Msg: err.Error()})
			return engine.HostProblems(errs)
		}
		return fmt.Errorf("%w: %v", engine.ErrHost, err)
	}
	markCheck(w, c)
	fmt.Fprintln(w, "kernel features:")
	for _, x := range f.List {
		state := "yes"
		if !x.OK {
			state = "no"
		}
		fmt.Fprintf(w, "  %-34s %s\n", x.Name, state)
	}
	if f.Has(rules.FeatNativeQueue) {
		fmt.Fprintln(w, "queue method will use: native nft queue")
	} else {
		fmt.Fprintln(w, "queue method will use: xt NFQUEUE target through nft compat")
	}
	for _, m := range engine.Missing(c, f) {
		errs = append(errs, config.Problem{Path: "kernel", Msg: "lacks " + m})
	}
	if len(errs) > 0 {
		return engine.HostProblems(errs)
	}
	fmt.Fprintf(w, "config: ok (%d sessions)\n", len(c.Sessions))
	for _, s := range c.Sessions {
		if s.Hold {
			fmt.Fprintf(w, "note: session %s holds its originals (hold: true): what it matches waits for nfclone, and stops while nfclone is stopped (nice %d)\n", s.Name, c.Queue.Nice)
		}
		switch {
		case c.KernelRouted(&s):
			key := "queue.kernel_route"
			if s.Method == config.MethodLog {
				key = "queue.log_kernel_route"
			}
			fmt.Fprintf(w, "note: session %s: the kernel sends its copies to the %s (%s): nfclone reads their headers and counts them\n", s.Name, s.Targets[0].Describe(), key)
		case c.KernelRoutedTCP(&s):
			fmt.Fprintf(w, "note: session %s: the kernel sends the copies of TCP packets to the %s, nfclone the rest (queue.log_kernel_route: tcp): nfclone reads the kernel's copies' headers and counts them\n", s.Name, s.Targets[0].Describe())
		}
		if c.TunnelTrimmed(&s) {
			fmt.Fprintf(w, "note: session %s: the path to the %s is shorter than the sources' packets with the tunnel's headers: the kernel cuts the TCP super-packets entering the tunnel to fit it (queue.vxlan_kernel_route: auto); longer single packets are sent in outer fragments\n", s.Name, s.Targets[0].Describe())
		}
	}
	if c.Queue.Realtime > 0 {
		fmt.Fprintf(w, "note: queue.realtime %d: nfclone's threads run SCHED_FIFO, ahead of the host's own work (nice does not apply)\n", c.Queue.Realtime)
	}
	fmt.Fprintln(w, "interfaces and gateways: ok")
	fmt.Fprintln(w, "check: ok")
	return nil
}

// markCheck reads the host's ruleset and warns about every rule that reads
// or changes bits of the packet mark in nfclone's field (mark_mask): those
// packets are not copied (queue sessions copy only packets whose field is
// clear) or the other user sees nfclone's marks on copies.
func markCheck(w io.Writer, c *config.Config) {
	uses, err := rules.HostMarkUses()
	if err != nil {
		fmt.Fprintf(w, "warning: cannot read the host's ruleset for other users of the packet mark: %v\n", err)
		return
	}
	over, others := rules.MarkOverlaps(uses, c.MarkMask, c.Table), 0
	for _, u := range uses {
		if u.Table != c.Table {
			others++
		}
	}
	fmt.Fprintf(w, "packet mark: nfclone uses mark_mask 0x%08x (copies 0x%08x); %d uses of the mark by other rules, %d overlapping\n", c.MarkMask, c.Mark, others, len(over))
	for _, u := range over {
		fmt.Fprintf(w, "warning: mark overlaps mark_mask 0x%08x: %s\n", c.MarkMask, u)
	}
}
