package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Commands that build a config for the user (tap, capture) report its
// problems in the words the user typed: the argument or flag that set the
// value, never a YAML key path the user has not seen.

var reSessionPath = regexp.MustCompile(`^sessions\[(\d+)\]\.(sources|targets)\[(\d+)\](\..*)?$`)

// TapWords rewrites the problems of a config built by Tap(maps, o) — by
// Validate, CheckHost or CheckFiles — into the maps and flags of the tap
// command: `argument 'e0>agg9': interface "agg9" does not exist (pass
// --create, or write +agg9, to have nfclone create it)`.
func TapWords(errs Errors, maps []string) Errors {
	out := make(Errors, 0, len(errs))
	for _, p := range errs {
		m := reSessionPath.FindStringSubmatch(p.Path)
		switch {
		case m != nil:
			i, _ := strconv.Atoi(m[1])
			if i < len(maps) {
				p.Path = "argument '" + maps[i] + "'"
			}
		case strings.HasPrefix(p.Path, "sessions["):
			if i, err := strconv.Atoi(p.Path[len("sessions["):strings.Index(p.Path, "]")]); err == nil && i < len(maps) {
				p.Path = "argument '" + maps[i] + "'"
			}
		case p.Path == "state_dir":
			p.Path = "--state-dir"
		}
		p.Msg = tapHint(p.Msg)
		out = append(out, p)
	}
	return out
}

var reIfQuoted = regexp.MustCompile(`interface "([^"]*)"`)

// tapHint turns a config file's advice into the tap command's.
func tapHint(msg string) string {
	name := ""
	if m := reIfQuoted.FindStringSubmatch(msg); m != nil {
		name = m[1]
	}
	msg = strings.Replace(msg, "(create: true makes nfclone create it)",
		fmt.Sprintf("(pass --create, or write +%s, to have nfclone create it)", name), 1)
	return strings.Replace(msg, "(remove create: true to mirror into it)",
		"(without --create and without a + before its name, nfclone mirrors into it)", 1)
}

// CaptureWords rewrites the problems of a config built by Capture(o) into
// its flags: `-i eth0: interface "eth0" does not exist`, `-w /nodir/x.pcap:
// directory /nodir does not exist`.
func CaptureWords(errs Errors, o CaptureOptions) Errors {
	ifaces := captureInterfaces(o)
	out := make(Errors, 0, len(errs))
	for _, p := range errs {
		m := reSessionPath.FindStringSubmatch(p.Path)
		switch {
		case m != nil && m[2] == "sources":
			j, _ := strconv.Atoi(m[3])
			if j < len(ifaces) {
				p.Path = "-i " + ifaces[j]
			}
		case m != nil && m[2] == "targets" && m[4] == ".path":
			p.Path = "-w " + o.Output
		case m != nil && m[2] == "targets" && m[4] == ".format":
			p.Path = "--format"
		case strings.HasSuffix(p.Path, ".method"):
			p.Path = "--method " + o.Method
		case strings.HasSuffix(p.Path, ".filter"):
			p.Path = "filter '" + strings.TrimSpace(o.Filter) + "'"
		default:
			p = flagPath(p)
		}
		if !slices.Contains(out, p) { // --dport without --proto: a tcp and a udp rule
			out = append(out, p)
		}
	}
	return out
}

// captureInterfaces are the -i values, split at commas, in order (the
// sources of the capture's session).
func captureInterfaces(o CaptureOptions) []string {
	var out []string
	for _, i := range o.Interfaces {
		out = append(out, splitList(i)...)
	}
	return out
}
