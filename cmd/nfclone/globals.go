package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/nfclone/nfclone/config"
)

// globals are what every command shares: the persistent flags, the config
// file flag and the output streams.
type globals struct {
	configPath  string
	logFormat   string
	logLevel    string
	cpuProfile  string
	stopProfile func()
	stdout      io.Writer
	stderr      io.Writer
}

// persistentFlags adds the flags every command takes (--log-format,
// --log-level, the hidden --cpuprofile) to root.
func (g *globals) persistentFlags(root *cobra.Command) {
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.cpuProfile, "cpuprofile", "", "write a Go CPU profile to this file (for `make bench` investigations)")
	_ = root.PersistentFlags().MarkHidden("cpuprofile")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if g.cpuProfile == "" {
			return nil
		}
		f, err := os.Create(g.cpuProfile)
		if err != nil {
			return usageError{fmt.Errorf("--cpuprofile: %w", err)}
		}
		g.stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
		return pprof.StartCPUProfile(f)
	}
}

// configFlag adds -c/--config to cmd.
func (g *globals) configFlag(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&g.configPath, "config", "c", "", "config file (YAML)")
}

func (g *globals) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(g.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.stderr, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text or json", g.logFormat)}
}

func (g *globals) load() (*config.Config, error) {
	if g.configPath == "" {
		return nil, usageError{errors.New("a config file is required: -c FILE")}
	}
	c, err := config.Load(g.configPath)
	if err != nil {
		var cerr config.Errors
		if !errors.As(err, &cerr) {
			return nil, usageError{err}
		}
		return nil, err
	}
	return c, nil
}

// loadOrDefaults loads -c if given, else the defaults (flush, status).
func (g *globals) loadOrDefaults() (*config.Config, error) {
	if g.configPath != "" {
		return g.load()
	}
	return config.DefaultsWithEnv()
}
