package config

import (
	"fmt"
	"os"
	"strings"
)

// TapOptions are the flags of `nfclone tap`.
type TapOptions struct {
	Create    bool   // every target is an interface nfclone creates
	Direction string // ingress | egress | both ("" = both)
	StateDir  string // "" = default
}

// Tap turns one-line port maps ('e0,e2>agg0' 'e0>e3') into a config: one
// dup session per map, copying whole frames from every source to every
// target. A target written '+agg0' (or every target, with Create) is an
// interface nfclone creates. Problems come back as Errors with the path
// map[i], one clear line each.
func Tap(maps []string, o TapOptions) (*Config, error) {
	c := Default()
	if o.StateDir != "" {
		c.StateDir = o.StateDir
	} else if d := os.Getenv(EnvPrefix + "_STATE_DIR"); d != "" {
		c.StateDir = d // like run
	}
	var errs Errors
	add := func(i int, format string, args ...any) {
		errs = append(errs, Problem{Path: "argument '" + maps[i] + "'", Msg: fmt.Sprintf(format, args...)})
	}
	if len(maps) == 0 {
		return nil, Errors{{Path: "tap", Msg: "give at least one map, e.g. 'e0,e2>agg0'"}}
	}
	dir := Direction(o.Direction)
	if dir == "" {
		dir = Both
	}
	if dir != Ingress && dir != Egress && dir != Both {
		return nil, Errors{{Path: "--direction", Msg: fmt.Sprintf("%q is not ingress, egress or both", dir)}}
	}
	sources, targets := map[string]int{}, map[string]int{}
	for i, m := range maps {
		src, dst, ok := strings.Cut(m, ">")
		if ok && strings.HasSuffix(src, "-") {
			// 'e0->agg0': an arrow, as in other tools; the source would be "e0-".
			add(i, "is not SOURCES>TARGETS: write '>' alone, like '%s>%s' (with '->' the source would be %q)", strings.TrimSuffix(src, "-"), dst, src)
			continue
		}
		if !ok || strings.Contains(dst, ">") {
			add(i, "is not SOURCES>TARGETS (like 'e0,e2>agg0')")
			continue
		}
		before := len(errs)
		s := Session{Name: fmt.Sprintf("tap%d", i+1), Method: MethodDup}
		for _, n := range splitList(src) {
			if !reIfname.MatchString(n) {
				add(i, "source %q is not an interface name", n)
				continue
			}
			if j, seen := targets[n]; seen {
				add(i, "%s is a target of argument '%s' and a source here: its copies would be copied again (a loop)", n, maps[j])
			}
			sources[n] = i
			s.Sources = append(s.Sources, Source{Interface: n, Direction: dir})
		}
		for _, n := range splitList(dst) {
			create := o.Create || strings.HasPrefix(n, "+")
			n = strings.TrimPrefix(n, "+")
			if !reIfname.MatchString(n) || len(n) > 12 && create {
				add(i, "target %q is not an interface name (at most 15 characters, 12 for one nfclone creates)", n)
				continue
			}
			if j, seen := sources[n]; seen && j == i {
				add(i, "%s is both a source and a target: its copies would be copied again (a loop)", n)
			} else if seen {
				add(i, "%s is a source of argument '%s' and a target here: its copies would be copied again (a loop)", n, maps[j])
			}
			targets[n] = i
			s.Targets = append(s.Targets, Target{Kind: KindDevice, Device: n, Create: create})
		}
		if len(errs) > before {
			continue
		}
		if len(s.Sources) == 0 || len(s.Targets) == 0 {
			add(i, "needs at least one source and one target")
			continue
		}
		c.Sessions = append(c.Sessions, s)
	}
	// A target created by one map and named by another is created once.
	created := map[string]bool{}
	for _, s := range c.Sessions {
		for _, t := range s.Targets {
			created[t.Device] = created[t.Device] || t.Create
		}
	}
	for i := range c.Sessions {
		for j := range c.Sessions[i].Targets {
			t := &c.Sessions[i].Targets[j]
			t.Create = created[t.Device]
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	if verr := Validate(&c); len(verr) > 0 {
		return nil, TapWords(verr, maps)
	}
	return &c, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// TapYAML prints a tap config as a config file for `nfclone run -c`.
func TapYAML(c *Config, maps []string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# nfclone config equivalent to: nfclone tap '%s'\n", strings.Join(maps, "' '"))
	if c.StateDir != defaultStateDir() {
		fmt.Fprintf(&sb, "state_dir: %s\n", c.StateDir)
	}
	sb.WriteString("sessions:\n")
	for _, s := range c.Sessions {
		fmt.Fprintf(&sb, "  - name: %s\n    method: dup\n    sources:\n", s.Name)
		for _, src := range s.Sources {
			fmt.Fprintf(&sb, "      - {interface: %s, direction: %s}\n", src.Interface, src.Direction)
		}
		sb.WriteString("    targets:\n")
		for _, t := range s.Targets {
			if t.Create {
				fmt.Fprintf(&sb, "      - {kind: device, device: %s, create: true}\n", t.Device)
			} else {
				fmt.Fprintf(&sb, "      - {kind: device, device: %s}\n", t.Device)
			}
		}
	}
	return sb.String()
}
