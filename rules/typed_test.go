package rules

import (
	"strings"
	"testing"

	"github.com/nfclone/nfclone/config"
)

// The compiler reads the typed forms Validate fills: a session whose
// filter was not typed is refused (not compiled as "no filter"), a blank
// filter is no filter, and a typed rule compiles from its Match alone.
func TestCompileReadsTypedForms(t *testing.T) {
	base := func() *config.Config {
		c := config.Default()
		c.Sessions = []config.Session{{
			Name: "s", Method: config.MethodDup, Sample: 1,
			Sources: []config.Source{{Interface: "e0", Direction: config.Ingress}},
			Targets: []config.Target{{Kind: config.KindDevice, Device: "e1"}},
		}}
		return &c
	}
	c := base()
	c.Sessions[0].Filter = "tcp"
	if _, err := Compile(c, Options{}); err == nil || !strings.HasPrefix(err.Error(), "sessions[0].filter: ") {
		t.Errorf("untyped filter: %v", err)
	}
	c = base()
	c.Sessions[0].Filter = "  "
	if _, err := Compile(c, Options{}); err != nil {
		t.Errorf("blank filter: %v", err)
	}
	// The strings say tcp port 80, the typed match udp port 53: the
	// compiler follows the typed form.
	c = base()
	c.Sessions[0].Rules = []config.Rule{{Number: 1, Action: "accept", Protocol: "tcp", DestinationPorts: "80",
		Match: &config.RuleMatch{Proto: 17, HasProto: true, DstPorts: []config.PortRange{{Lo: 53, Hi: 53}}}}}
	rs, err := Compile(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if out := rs.Render(); !strings.Contains(out, "udp dport 53") || strings.Contains(out, "dport 80") {
		t.Errorf("the rule does not follow its typed match:\n%s", out)
	}
}
