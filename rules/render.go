package rules

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/nftables"
)

// Render prints the ruleset in `nft -f` syntax, in the layout `nft list
// table` prints, so that the kernel's listing after apply can be compared
// with it line by line.
func (rs *Ruleset) Render() string {
	var sb strings.Builder
	for i := range rs.Tables {
		sb.WriteString(rs.RenderTable(rs.Tables[i].Family))
	}
	return sb.String()
}

// RenderTable prints one family's table (empty if there is none).
func (rs *Ruleset) RenderTable(f nftables.TableFamily) string {
	t := rs.Table(f)
	if t == nil {
		return ""
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "table %s %s {\n\tflags owner\n\n", FamilyName(t.Family), rs.Name)
	for _, s := range t.Sets {
		fmt.Fprintf(&sb, "\tset %s {\n\t\ttype %s\n\t\tsize %d\n\t\tflags dynamic,timeout\n\t\ttimeout %s\n\t}\n\n",
			s.Name, s.KeyType.Name, s.Size, nftDuration(s.Timeout))
	}
	for i, c := range t.Chains {
		if i > 0 {
			sb.WriteString("\n")
		}
		fmt.Fprintf(&sb, "\tchain %s {\n", c.Name)
		if c.Hook != nil {
			dev := ""
			if c.Hook.Device != "" {
				dev = fmt.Sprintf(" device %q", c.Hook.Device)
			}
			fmt.Fprintf(&sb, "\t\ttype filter hook %s%s priority %s; policy accept;\n",
				hookName(t.Family, c.Hook.Num), dev, priorityName(t.Family, c.Hook.Num, int(c.Hook.Priority)))
		}
		for _, r := range c.Rules {
			fmt.Fprintf(&sb, "\t\t%s\n", r.Text)
		}
		sb.WriteString("\t}\n")
	}
	sb.WriteString("}\n")
	return sb.String()
}

func hookName(f nftables.TableFamily, h nftables.ChainHook) string {
	if f == nftables.TableFamilyNetdev {
		if h == *nftables.ChainHookEgress {
			return "egress"
		}
		return "ingress"
	}
	switch h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookOutput:
		return "output"
	case *nftables.ChainHookPostrouting:
		return "postrouting"
	}
	return fmt.Sprint(uint32(h))
}

// priorityName prints a priority the way nft does: a standard name, a name
// with an offset, or a number.
func priorityName(f nftables.TableFamily, h nftables.ChainHook, p int) string {
	type std struct {
		name string
		val  int
	}
	stds := []std{{"raw", -300}, {"mangle", -150}, {"dstnat", -100}, {"filter", 0}, {"security", 50}, {"srcnat", 100}}
	if f == nftables.TableFamilyNetdev {
		stds = []std{{"filter", 0}}
	}
	for _, s := range stds {
		if s.name == "dstnat" && h != *nftables.ChainHookPrerouting && h != *nftables.ChainHookOutput {
			continue
		}
		if s.name == "srcnat" && h != *nftables.ChainHookPostrouting && h != *nftables.ChainHookInput {
			continue
		}
		switch d := p - s.val; {
		case d == 0:
			return s.name
		case d > 0 && d <= 10:
			return fmt.Sprintf("%s + %d", s.name, d)
		case d < 0 && d >= -10:
			return fmt.Sprintf("%s - %d", s.name, -d)
		}
	}
	return fmt.Sprint(p)
}

// nftDuration prints a duration the way nft does: "1m", "1h", "1d", "1m30s".
func nftDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	var sb strings.Builder
	for _, u := range []struct {
		n string
		d time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}, {"ms", time.Millisecond}} {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&sb, "%d%s", n, u.n)
			d -= n * u.d
		}
	}
	return sb.String()
}
