package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nfclone/nfclone/test/lab"
)

// dashboardQuery is one PromQL expression of the dashboard, with the
// legend it formats and, for label_values(), the label it lists.
type dashboardQuery struct {
	where, expr, legend, listLabel string
}

// dashboardQueries collects every expression of packaging/grafana/nfclone.json
// (panel targets and template variables), Grafana variables substituted.
func dashboardQueries(t *testing.T, path string) []dashboardQuery {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr   string `json:"expr"`
				Legend string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	subst := strings.NewReplacer("$__rate_interval", "1m", "$instance", ".*", "$session", ".*")
	var qs []dashboardQuery
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if tg.Expr != "" {
				qs = append(qs, dashboardQuery{where: "panel " + p.Title, expr: subst.Replace(tg.Expr), legend: tg.Legend})
			}
		}
	}
	reLV := regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)
	for _, v := range d.Templating.List {
		q, ok := v.Query.(map[string]any)
		if !ok {
			continue
		}
		s, _ := q["query"].(string)
		if m := reLV.FindStringSubmatch(s); m != nil {
			qs = append(qs, dashboardQuery{where: "variable " + v.Name, expr: subst.Replace(m[1]), listLabel: m[2]})
		} else if s != "" {
			t.Fatalf("variable %s: query %q is not label_values(EXPR, LABEL)", v.Name, s)
		}
	}
	return qs
}

var (
	reSelector = regexp.MustCompile(`\b(nfclone_[a-z0-9_]+)\b(\{([^}]*)\})?`)
	reMatcher  = regexp.MustCompile(`(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	reGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	reLegend   = regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`)
)

// targetLabels are added by Prometheus at scrape time, not by nfclone.
var targetLabels = []string{"instance", "job"}

// checkQueries checks the queries against a scrape: every metric exists,
// every label a matcher, a grouping, a legend or label_values names is a
// label of the metrics the expression selects, and every value an
// equality matcher asks for occurs. It returns the problems.
func checkQueries(qs []dashboardQuery, fams map[string]*dto.MetricFamily) []string {
	labelsOf := func(name string) map[string][]string {
		out := map[string][]string{}
		f := fams[name]
		if f == nil {
			return nil
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !slices.Contains(out[lp.GetName()], lp.GetValue()) {
					out[lp.GetName()] = append(out[lp.GetName()], lp.GetValue())
				}
			}
		}
		return out
	}
	var problems []string
	bad := func(q dashboardQuery, format string, args ...any) {
		problems = append(problems, q.where+": "+q.expr+": "+fmt.Sprintf(format, args...))
	}
	for _, q := range qs {
		sels := reSelector.FindAllStringSubmatch(q.expr, -1)
		if len(sels) == 0 {
			bad(q, "selects no nfclone metric")
			continue
		}
		union := map[string]bool{}
		for _, l := range targetLabels {
			union[l] = true
		}
		for _, s := range sels {
			name := s[1]
			if fams[name] == nil {
				bad(q, "metric %s is not in /metrics", name)
				continue
			}
			labels := labelsOf(name)
			for l := range labels {
				union[l] = true
			}
			for _, m := range reMatcher.FindAllStringSubmatch(s[3], -1) {
				l, op, v := m[1], m[2], m[3]
				if slices.Contains(targetLabels, l) {
					continue
				}
				vals, ok := labels[l]
				if !ok {
					bad(q, "%s has no label %q", name, l)
				} else if op == "=" && !slices.Contains(vals, v) {
					bad(q, "%s{%s} has no value %q (has %v)", name, l, v, vals)
				}
			}
		}
		var grouped []string
		for _, g := range reGrouping.FindAllStringSubmatch(q.expr, -1) {
			for _, l := range strings.Split(g[2], ",") {
				if l = strings.TrimSpace(l); l == "" {
					continue
				}
				if !union[l] {
					bad(q, "%s (%s) names label %q, which no selected metric has", g[1], g[2], l)
				}
				if g[1] == "by" {
					grouped = append(grouped, l)
				}
			}
		}
		for _, m := range reLegend.FindAllStringSubmatch(q.legend, -1) {
			l := m[1]
			switch {
			case !union[l]:
				bad(q, "legend {{%s}}: no selected metric has that label", l)
			case len(grouped) > 0 && !slices.Contains(grouped, l):
				bad(q, "legend {{%s}}: the aggregation keeps only %v", l, grouped)
			}
		}
		if q.listLabel != "" && !union[q.listLabel] {
			bad(q, "label_values lists %q, which the metric does not have", q.listLabel)
		}
	}
	return problems
}

// TestGrafanaDashboard runs nfclone with a queue session (gateway target:
// readers, copy queue, target series), a dup session and a session whose
// target interface has disappeared (interface_up 0, state waiting),
// scrapes its /metrics and checks every metric and label the dashboard's
// PromQL refers to against it; promtool checks that every expression
// parses.
func TestGrafanaDashboard(t *testing.T) {
	lab.RequireTools(t, "curl", "promtool")
	root, err := lab.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	qs := dashboardQueries(t, filepath.Join(root, "packaging/grafana/nfclone.json"))
	if len(qs) < 20 {
		t.Fatalf("only %d queries in the dashboard", len(qs))
	}

	// Every expression parses (promtool check rules on recording rules).
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, q := range qs {
		e, _ := json.Marshal(q.expr)
		rules.WriteString("      - record: nfclone:dashboard_" + strings.Repeat("x", i+1) + "\n        expr: " + string(e) + "\n")
	}
	rf := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rf, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "check", "rules", rf).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules (the dashboard's expressions): %v\n%s", err, out)
	}

	l := lab.New(t)
	l.MustExec(t, l.Eng, "ip", "link", "add", "mon0", "type", "veth", "peer", "name", "mon1")
	l.MustExec(t, l.Eng, "ip", "link", "set", "mon0", "up")
	l.MustExec(t, l.Eng, "ip", "link", "set", "mon1", "up")
	d := startNfclone(t, l, `
metrics: {listen: "127.0.0.1:9464"}
sessions:
  - name: q
    method: queue
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
  - name: d
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: device, device: e3}]
  - name: w
    sources: [{interface: e2, direction: ingress}]
    targets: [{kind: device, device: mon0}]
`)
	ping(t, l, l.Src, lab.EngE0IP, 5)
	l.MustExec(t, l.Eng, "ip", "link", "del", "mon0")
	lab.WaitFor(t, 10*time.Second, func() bool {
		return strings.Contains(scrape(t, l), `nfclone_interface_up{interface="mon0"} 0`)
	}, "mon0 missing in /metrics")
	text := scrape(t, l)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	problems := checkQueries(qs, fams)
	for _, p := range problems {
		t.Error(p)
	}
	var names []string
	for _, q := range qs {
		for _, s := range reSelector.FindAllStringSubmatch(q.expr, -1) {
			if !slices.Contains(names, s[1]) {
				names = append(names, s[1])
			}
		}
	}
	sort.Strings(names)
	t.Logf("%d dashboard queries, %d distinct nfclone metrics, checked against a live /metrics (%d families): %d problems", len(qs), len(names), len(fams), len(problems))
	d.stop(t)
}

// TestDashboardCheckerCatches: the checker reports a missing metric, a
// missing label, a missing label value and a legend label the
// aggregation drops (no lab needed).
func TestDashboardCheckerCatches(t *testing.T) {
	const text = `# TYPE nfclone_session_dropped_packets_total counter
nfclone_session_dropped_packets_total{method="queue",reason="user",session="q"} 0
# TYPE nfclone_session_state gauge
nfclone_session_state{method="queue",session="q",state="running"} 1
`
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	good := []dashboardQuery{
		{expr: `sum by (session, reason) (rate(nfclone_session_dropped_packets_total{instance=~".*", session=~".*"}[1m]))`, legend: "{{session}}: {{reason}}"},
		{expr: `nfclone_session_state{state="running"} == 1`},
		{expr: `nfclone_session_state`, listLabel: "session"},
	}
	if p := checkQueries(good, fams); len(p) != 0 {
		t.Fatalf("good queries flagged: %v", p)
	}
	for _, q := range []dashboardQuery{
		{expr: `rate(nfclone_session_droped_packets_total[1m])`},
		{expr: `sum by (reasons) (nfclone_session_dropped_packets_total)`},
		{expr: `nfclone_session_state{status="running"}`},
		{expr: `nfclone_session_state{state="stopped"}`},
		{expr: `sum by (session) (nfclone_session_dropped_packets_total)`, legend: "{{reason}}"},
		{expr: `nfclone_session_state`, listLabel: "target"},
		{expr: `vector(1)`},
	} {
		if p := checkQueries([]dashboardQuery{q}, fams); len(p) == 0 {
			t.Errorf("not caught: %+v", q)
		}
	}
}
