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
