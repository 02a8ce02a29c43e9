package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/engine"
	"github.com/nfclone/nfclone/status"
	"github.com/nfclone/nfclone/statusapi"
)

// statusCommand is `nfclone status`: the running daemon's counters.
func statusCommand(g *globals) *cobra.Command {
	var asJSON bool
	var stateDir string
	cmd := &cobra.Command{
		Use:   "status [-c FILE] [--json]",
		Short: "Live per-session counters of the running daemon (through its unix socket in state_dir)",
		Long: `Reads the running daemon through state_dir/nfclone.sock: the state directory is
--state-dir, else NFCLONE_STATE_DIR, else the config file's state_dir (read leniently:
a file that no longer validates, after a refused reload, still gives it), else the
default. The daemon needs nothing else: status shows the last reload and its error.`,
		Example: `  nfclone status
  nfclone status -c /etc/nfclone/nfclone.yaml --json | jq '.sessions[].copied'
  nfclone status --state-dir /run/nfclone-lab`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := fetchStatus(cmd.Context(), g, stateDir)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return statusapi.WriteTable(g.stdout, st)
		},
	}
	g.configFlag(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "state directory (overrides the config's state_dir)")
	return cmd
}

// fetchStatus reads the running daemon's status. It needs only the state
// directory: --state-dir, NFCLONE_STATE_DIR, the config file's state_dir or
// the default. A config file that no longer loads (edited after the daemon
// started; its reload was refused) does not stop status: its state_dir is
// read leniently, and the file's problems are only a note on stderr — the
// daemon's own account of the refused reload is in the status.
func fetchStatus(ctx context.Context, g *globals, stateDirFlag string) (status.Status, error) {
	dir, fileErr := statusStateDir(g.configPath, stateDirFlag)
	st, err := statusapi.Fetch(ctx, dir)
	if err != nil {
		if fileErr != nil {
			return st, fmt.Errorf("%w: %v (and %s does not load: %v)", engine.ErrHost, err, g.configPath, oneLine(fileErr))
		}
		return st, fmt.Errorf("%w: %v", engine.ErrHost, err)
	}
	if fileErr != nil {
		fmt.Fprintf(g.stderr, "nfclone: note: %s does not load (%s); the daemon still runs its last good config\n", g.configPath, oneLine(fileErr))
	}
	return st, nil
}

// statusStateDir finds the daemon's state directory; fileErr is why the
// config file did not load, if it did not.
func statusStateDir(path, flag string) (dir string, fileErr error) {
	if flag != "" {
		return flag, nil
	}
	if path != "" {
		c, err := config.Load(path)
		if err == nil {
			return c.StateDir, nil
		}
		fileErr = err
		if d, ok := config.StateDirOf(path); ok {
			return d, fileErr
		}
	}
	if d := os.Getenv(config.EnvPrefix + "_STATE_DIR"); d != "" {
		return d, fileErr
	}
	return config.Default().StateDir, fileErr
}

// oneLine summarises an error on one line: the first problem of a list.
func oneLine(err error) string {
	var cerr config.Errors
	if errors.As(err, &cerr) && len(cerr) > 0 {
		if len(cerr) == 1 {
			return cerr[0].String()
		}
		return fmt.Sprintf("%s, and %d more problem(s)", cerr[0], len(cerr)-1)
	}
	return err.Error()
}
