package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/nfclone/nfclone/config"
)

// shipCommands are the commands for packaging and operations: schema, man
// and top (top.go).
func shipCommands(g *globals) []*cobra.Command {
	schemaCmd := &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of the config file (for editors: yaml-language-server)",
		Example: `  nfclone schema > nfclone.schema.json
  # in the config file:  # yaml-language-server: $schema=/usr/share/nfclone/nfclone.schema.json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			b, err := config.JSONSchema()
			if err != nil {
				return err
			}
			_, err = g.stdout.Write(b)
			return err
		},
	}
	manCmd := &cobra.Command{
		Use:    "man DIR",
		Short:  "Write a man page (section 8) for every command into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return fmt.Errorf("man: %w", err)
			}
			// SOURCE_DATE_EPOCH (reproducible builds) wins over the date.
			date := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			hdr := &doc.GenManHeader{Title: "NFCLONE", Section: "8", Source: "nfclone " + version, Manual: "nfclone manual", Date: &date}
			if os.Getenv("SOURCE_DATE_EPOCH") != "" {
				hdr.Date = nil
			}
			root := cmd.Root()
			noAutoGenTag(root)
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return fmt.Errorf("man: %w", err)
			}
			return nil
		},
	}
	return []*cobra.Command{schemaCmd, manCmd, topCommand(g)}
}

// noAutoGenTag drops cobra's "Auto generated" history section (it carries
// a date, and the pages should be reproducible).
func noAutoGenTag(c *cobra.Command) {
	c.DisableAutoGenTag = true
	for _, sub := range c.Commands() {
		noAutoGenTag(sub)
	}
}
