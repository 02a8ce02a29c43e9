package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, and it must
// return either a config or an error with a message — for anything past
// reading the YAML, a config.Errors whose every problem has a path and a
// message. A config it returns must pass Validate again unchanged.
//
// Seeds live in testdata/fuzz/FuzzParse; run with
//
//	go test ./config -run '^$' -fuzz FuzzParse -fuzztime 30s
func FuzzParse(f *testing.F) {
	f.Add([]byte(designExample))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, func(k string) (string, bool) {
			// One env override from the input itself, so that env paths
			// are fuzzed as well.
			if k == "NFCLONE_QUEUE_WORKERS" && len(data) > 0 && data[0] == 'W' {
				return string(data[1:min(len(data), 8)]), true
			}
			return "", false
		})
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config and nil error")
			}
			if errs := Validate(cfg); len(errs) > 0 {
				t.Fatalf("a parsed config fails Validate again: %v", errs)
			}
			return
		}
		if cfg != nil {
			t.Fatalf("config and error together: %v", err)
		}
		if err.Error() == "" {
			t.Fatal("error without a message")
		}
		var errs Errors
		if !errors.As(err, &errs) {
			t.Fatalf("error is %T, not config.Errors: %v", err, err)
		}
		if len(errs) == 0 {
			t.Fatal("empty Errors returned as an error")
		}
		for i, p := range errs {
			if strings.HasSuffix(p.Msg, "has invalid keys:") || (p.Path == "" && p.Msg == "unknown key") {
				// Known: decodeProblems parses mapstructure's "has invalid
				// keys: a, b" text, so an empty key (".: 0", seed
				// empty_key_path) or a key holding a comma ("session,: 1",
				// seed comma_key_path) loses its path. See
				// TestParseBadConfigs/empty_key and /key_with_a_comma.
				t.Fatalf("regression (fixed bug): unknown key reported without its path: %q", p.String())
			}
			if p.Path == "" || strings.TrimSpace(p.Msg) == "" {
				t.Fatalf("problem %d without path or message: %#v", i, p)
			}
			if i > 0 && pathLess(p.Path, errs[i-1].Path) {
				t.Fatalf("problems not sorted: %q before %q", errs[i-1].Path, p.Path)
			}
		}
	})
}
