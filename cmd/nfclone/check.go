package main

import (
	"fmt"
	"io"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/engine"
	"github.com/nfclone/nfclone/rules"
)

// check validates a loaded config against this host and its kernel. Every
// problem is collected first; warnings and what was found are printed, and
// the "ok" lines only when nothing is wrong: check never says ok and then
// lists problems.
func check(w io.Writer, c *config.Config) error {
	errs := append(config.CheckHost(c, config.SystemHost{}, nil), config.CheckFiles(c)...)
	for _, warn := range append(config.Warnings(c), config.ARPWarnings(c, config.SystemHost{})...) {
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
	fmt.Fprintln(w, "interfaces and gateways: ok")
	fmt.Fprintln(w, "check: ok")
	return nil
}
