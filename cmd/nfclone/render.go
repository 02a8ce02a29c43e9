package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/engine"
	"github.com/nfclone/nfclone/gsotrim"
	"github.com/nfclone/nfclone/rules"
)

// renderCommand is `nfclone render`: what run would install, touching nothing.
func renderCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "render -c FILE",
		Short: "Print the nft ruleset and the routing plan; touches nothing",
		Example: `  nfclone render -c mirror.yaml
  nfclone render -c mirror.yaml | nft -c -f -   # let nft check it`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.load()
			if err != nil {
				return err
			}
			return render(g.stdout, c)
		},
	}
	g.configFlag(cmd)
	return cmd
}

func render(w io.Writer, c *config.Config) error {
	// As run decides on this host: who sends depends on its MTUs.
	notes := config.KernelRouteMTU(c, config.SystemMTU, config.SystemTunnelPathMTU, gsotrim.Supported() == nil)
	rs, err := rules.Compile(c, rules.Options{})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "# nfclone %s: nftables ruleset (nft -f syntax)\n", version)
	for _, n := range notes {
		fmt.Fprintf(w, "# warning: %s\n", n)
	}
	fmt.Fprint(w, rs.Render())
	plan := engine.RoutePlan(c)
	if !plan.Empty() {
		fmt.Fprintln(w, "# routing plan (applied through rtnetlink, undone on exit):")
		for _, l := range strings.Split(strings.TrimRight(plan.Render(), "\n"), "\n") {
			fmt.Fprintf(w, "#   %s\n", l)
		}
	}
	return nil
}
