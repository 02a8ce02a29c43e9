package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nfclone/nfclone/engine"
	"github.com/nfclone/nfclone/route"
)

// flushCommand is `nfclone flush`: undo what a run left, from its state file.
func flushCommand(g *globals) *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "flush [-c FILE]",
		Short: "Remove everything nfclone installed (from its state file)",
		Example: `  nfclone flush
  nfclone flush -c mirror.yaml   # uses its table and state_dir`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			c, err := g.loadOrDefaults()
			if err != nil {
				return err
			}
			if stateDir != "" {
				c.StateDir = stateDir
			}
			rk, err := route.Open()
			if err != nil {
				return fmt.Errorf("%w: opening rtnetlink: %v", engine.ErrHost, err)
			}
			defer rk.Close()
			if err := engine.Reconcile(c, rk, log); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, "nfclone: nothing of nfclone is left")
			return nil
		},
	}
	g.configFlag(cmd)
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "state directory (overrides the config's state_dir)")
	return cmd
}
