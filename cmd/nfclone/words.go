package main

import (
	"errors"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/engine"
	"github.com/nfclone/nfclone/route"
)

// cmdProblems are the problems of a config a command built from its flags
// and arguments (tap, capture), already in the words the user typed: report
// heads them with the command, not "the config".
type cmdProblems struct {
	cmd string
	err error
}

func (e cmdProblems) Error() string { return e.err.Error() }
func (e cmdProblems) Unwrap() error { return e.err }

// inWords rewrites the config problems in err with words (keeping a host
// problem a host problem) and marks them as the command's.
func inWords(cmd string, err error, words func(config.Errors) config.Errors) error {
	var cerr config.Errors
	if err == nil || !errors.As(err, &cerr) {
		return err
	}
	out := words(cerr)
	if errors.Is(err, engine.ErrHost) {
		return cmdProblems{cmd, engine.HostProblems(out)}
	}
	return cmdProblems{cmd, out}
}

// hostCheck is what run checks on the host before installing anything
// (interfaces, gateways, pcap directories), for commands that check first.
// owned are interfaces a killed run left (run removes them before it starts).
func hostCheck(c *config.Config, owned map[string]bool) error {
	if errs := append(config.CheckHost(c, config.SystemHost{}, owned), config.CheckFiles(c)...); len(errs) > 0 {
		return engine.HostProblems(errs)
	}
	return nil
}

// leftLinks are the interfaces the state file in dir says nfclone created
// (a killed run's; none if there is no state file it may read).
func leftLinks(dir string) map[string]bool {
	out := map[string]bool{}
	st, err := engine.ReadState(dir)
	if err != nil || st == nil {
		return out
	}
	for _, ch := range st.Journal {
		if ch.Op == route.OpLinkCreated && ch.Link != nil {
			out[ch.Link.Name] = true
			if ch.Link.Peer != "" {
				out[ch.Link.Peer] = true
			}
		}
	}
	return out
}
