package config

import (
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

var reYAMLAt = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlProblemLine corrects the line of a YAML syntax error. The YAML parser
// reports the line where the enclosing construct started (its "context"),
// not where the problem is: a mis-indented key on line 6 of a list that
// starts on line 2 is reported "line 2". The problem line is the first line
// at which the document, cut there, fails with the same problem: each
// prefix from the reported line on is parsed until one does.
func yamlProblemLine(data []byte, msg string) string {
	m := reYAMLAt.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	reported, _ := strconv.Atoi(m[1])
	problem := m[2]
	lines := strings.SplitAfter(string(data), "\n")
	if len(lines) > 2000 {
		return msg // a config is small; do not parse a huge file 2000 times
	}
	for k := max(reported, 1); k <= len(lines); k++ {
		var v any
		err := yaml.Unmarshal([]byte(strings.Join(lines[:k], "")), &v)
		if err == nil {
			continue
		}
		if sm := reYAMLAt.FindStringSubmatch(err.Error()); sm != nil && sm[2] == problem {
			return "yaml: line " + strconv.Itoa(k) + ": " + problem
		}
	}
	return msg
}

// keyLines maps the key paths of a YAML document (sessions[0].rules[1].number,
// as in Problem.Path) to the line each starts on; nil if it does not parse.
func keyLines(data []byte) map[string]int {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return nil
	}
	out := map[string]int{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := joinPath(path, strings.ToLower(k.Value))
				if _, seen := out[p]; !seen {
					out[p] = k.Line
				}
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, item := range n.Content {
				p := path + "[" + strconv.Itoa(i) + "]"
				out[p] = item.Line
				walk(item, p)
			}
		}
	}
	walk(doc.Content[0], "")
	return out
}

// lineOf is the line of path in lines, or of its nearest parent there
// (a required key that is missing: the line of the map it belongs in).
func lineOf(lines map[string]int, path string) int {
	for p := path; p != ""; {
		if l, ok := lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			return 0
		}
		p = p[:i]
	}
	return 0
}

// SetLines sets the Line of each problem that has none from the config
// file's text (problems found after Parse: interfaces, gateways, files).
func SetLines(errs Errors, data []byte) {
	lines := keyLines(data)
	for i := range errs {
		if errs[i].Line == 0 {
			errs[i].Line = lineOf(lines, errs[i].Path)
		}
	}
}

// Text is the problems one per line, each with its line when known.
func (e Errors) Text() string {
	var b strings.Builder
	for i, p := range e {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.String())
		if p.Line > 0 {
			b.WriteString(" (line " + strconv.Itoa(p.Line) + ")")
		}
	}
	return b.String()
}
