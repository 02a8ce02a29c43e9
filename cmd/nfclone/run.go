package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/daemon"
	"github.com/nfclone/nfclone/engine"
	"github.com/nfclone/nfclone/metrics"
	"github.com/nfclone/nfclone/statusapi"
)

// runCommand is `nfclone run`: the daemon.
func runCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run -c FILE",
		Short: "Apply the config and copy packets; SIGHUP reloads, SIGTERM/SIGINT clean up and exit",
		Example: `  nfclone run -c /etc/nfclone/nfclone.yaml
  NFCLONE_STATE_DIR=/tmp/nfc nfclone run -c mirror.yaml --log-format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			c, err := g.load()
			if err != nil {
				return err
			}
			path := g.configPath
			e := &engine.Engine{Cfg: c, Log: log, Version: version, ConfigPath: path,
				Load: func() (*config.Config, error) { return config.Load(path) }}
			return runDaemon(cmd.Context(), e, log, c.Watch)
		},
	}
	g.configFlag(cmd)
	return cmd
}

// runDaemon runs the engine in the foreground (run, tap) with the metrics
// endpoint and the status socket beside it: SIGTERM/SIGINT stop it cleanly
// (exit 0); a second one exits at once; SIGHUP — and a change of the config
// file with watch — reloads (see the daemon package).
func runDaemon(ctx context.Context, e *engine.Engine, log *slog.Logger, watch bool) error {
	if err := engine.SetNice(e.Cfg.Queue.Nice); err != nil {
		return err
	}
	if err := engine.SetRealtime(e.Cfg.Queue.Realtime); err != nil {
		return err
	}
	engine.SetCPUs(e.Cfg.Queue.CPUs)
	engine.SetMemoryLimit()
	d := &daemon.Daemon{Engine: e, Log: log}
	if listen := e.Cfg.Metrics.Listen; listen != "" {
		mc := metrics.New(e.Status)
		d.Services = append(d.Services, daemon.Service{Name: "metrics",
			Run: func(ctx context.Context) error { return metrics.Serve(ctx, listen, mc, log) }})
	}
	stateDir := e.Cfg.StateDir
	d.Services = append(d.Services, daemon.Service{Name: "status",
		Run: func(ctx context.Context) error { return statusapi.Serve(ctx, stateDir, e.Status, log) }})
	if watch && e.ConfigPath != "" {
		d.WatchPath = e.ConfigPath
	}
	return d.Run(ctx)
}
