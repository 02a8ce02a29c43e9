// Command nfclone mirrors the packets that matter to a host. See README.md.
//
// This file builds the command tree; each command is in its own file
// (run.go, render.go, check.go, flush.go, tap.go, capture.go, collect.go,
// status.go, top.go, ship.go, version.go) and the daemon around the engine
// is the daemon package.
package main

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/engine"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(exitCode(run(os.Args[1:], os.Stdout, os.Stderr)))
}

// usageError marks bad flags or arguments (exit 1).
type usageError struct{ error }

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var cerr config.Errors
	var uerr usageError
	switch {
	case errors.Is(err, engine.ErrHost):
		return 2 // the config is valid, this host cannot run it
	case errors.As(err, &cerr), errors.As(err, &uerr):
		return 1
	}
	return 2
}

func run(args []string, stdout, stderr io.Writer) error {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "nfclone",
		Short:         "Mirror the packets that matter to a host (nftables dup, NFQUEUE, NFLOG)",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version, // nfclone -v, --version
	}
	root.SetVersionTemplate("nfclone {{.Version}}\n")
	g.persistentFlags(root)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(runCommand(g), renderCommand(g), checkCommand(g), flushCommand(g), statusCommand(g),
		tapCommand(g), captureCommand(g), collectCommand(g), versionCommand(g))
	root.AddCommand(shipCommands(g)...)
	// An unknown command is bad input, and so are the arguments a command's
	// validator refuses: usage errors (exit 1), never recognised by their text.
	root.Args = cobra.NoArgs
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	usageArgs(root)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(context.Background())
	if g.stopProfile != nil {
		g.stopProfile()
	}
	if err != nil {
		withLines(err, g.configPath)
		report(stderr, g.logFormat, err)
	}
	return err
}

// usageArgs makes every command's argument validator return usage errors
// (flags are covered by the root's flag error function).
func usageArgs(c *cobra.Command) {
	for _, sub := range c.Commands() {
		usageArgs(sub)
	}
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
}
