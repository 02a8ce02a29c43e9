package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/engine"
)

// report prints the error a command ends with: config problems one per
// line with their key paths (or the flags and arguments that set them).
// With --log-format json it is one JSON object, like the logs.
func report(w io.Writer, format string, err error) {
	var cerr config.Errors
	isList := errors.As(err, &cerr)
	head := fmt.Sprintf("nfclone: %v", err)
	if isList {
		var cp cmdProblems
		switch fromCmd := errors.As(err, &cp); {
		case errors.Is(err, engine.ErrHost) && fromCmd:
			head = fmt.Sprintf("nfclone %s: %d problem(s) on this host:", cp.cmd, len(cerr))
		case errors.Is(err, engine.ErrHost):
			head = fmt.Sprintf("nfclone: %d problem(s) on this host:", len(cerr))
		case fromCmd:
			head = fmt.Sprintf("nfclone %s: %d problem(s) with the arguments:", cp.cmd, len(cerr))
		default:
			head = fmt.Sprintf("nfclone: the config has %d problem(s):", len(cerr))
		}
	}
	if format == "json" {
		attrs := []any{"exit", exitCode(err)}
		if isList {
			ps := make([]map[string]any, len(cerr))
			for i, p := range cerr {
				ps[i] = map[string]any{"key": p.Path, "problem": p.Msg}
				if p.Line > 0 {
					ps[i]["line"] = p.Line
				}
			}
			attrs = append(attrs, "problems", ps)
		}
		slog.New(slog.NewJSONHandler(w, nil)).Error(strings.TrimSuffix(head, ":"), attrs...)
		return
	}
	fmt.Fprintln(w, head)
	for _, p := range cerr {
		if p.Line > 0 {
			fmt.Fprintf(w, "  %s (line %d)\n", p, p.Line)
			continue
		}
		fmt.Fprintf(w, "  %s\n", p)
	}
}

// withLines gives the problems of a config file that have no line yet (the
// host's: interfaces, gateways, pcap directories) the line of their key.
func withLines(err error, path string) {
	var cerr config.Errors
	if path == "" || !errors.As(err, &cerr) {
		return
	}
	if data, rerr := os.ReadFile(path); rerr == nil {
		config.SetLines(cerr, data) // the list shares its array with err's
	}
}
