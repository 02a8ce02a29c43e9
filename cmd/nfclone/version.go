package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// versionCommand is `nfclone version` (also nfclone -v, --version).
func versionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintln(g.stdout, "nfclone", version)
		},
	}
}
