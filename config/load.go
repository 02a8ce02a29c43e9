package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix is the prefix of environment variables that override scalar keys:
// NFCLONE_TABLE, NFCLONE_STATE_DIR, NFCLONE_METRICS_LISTEN, NFCLONE_QUEUE_CAP, ...
const EnvPrefix = "NFCLONE"

// Default returns a Config holding every default and no sessions.
func Default() Config {
	return Config{
		Table:      DefaultTable,
		StateDir:   defaultStateDir(),
		Mark:       DefaultMark,
		MarkMask:   DefaultMarkMask,
		RouteTable: DefaultRouteTable,
		RulePref:   DefaultRulePref,
		Metrics:    Metrics{Listen: DefaultMetrics},
		Queue: Queue{
			Num: DefaultQueueNum, Count: DefaultQueueCount, MaxLen: DefaultQueueMax,
			Cap: DefaultQueueCap, CapBytes: DefaultQueueCapBytes, CapByteCount: 16 << 20 /* DefaultQueueCapBytes */, Workers: DefaultWorkers, Nice: DefaultNice,
			SocketBuffer: DefaultSocketBuffer, SocketBufferBytes: 64 << 20, /* DefaultSocketBuffer */
			KernelRoute: true, LogKernelRoute: LogRouteTCP, VXLANKernelRoute: VXLANRouteAuto,
		},
	}
}

// scalarDefaults are registered with viper so that NFCLONE_* environment
// variables override them (viper only binds keys it knows).
func scalarDefaults() map[string]any {
	d := Default()
	return map[string]any{
		"table": d.Table, "watch": d.Watch, "state_dir": d.StateDir,
		"mark": d.Mark, "mark_mask": d.MarkMask, "route_table": d.RouteTable, "rule_pref": d.RulePref,
		"metrics.listen": d.Metrics.Listen,
		"queue.num":      d.Queue.Num, "queue.count": d.Queue.Count, "queue.max_len": d.Queue.MaxLen,
		"queue.cap": d.Queue.Cap, "queue.cap_bytes": d.Queue.CapBytes, "queue.workers": d.Queue.Workers, "queue.nice": d.Queue.Nice,
		"queue.cpus": d.Queue.CPUs, "queue.socket_buffer": d.Queue.SocketBuffer,
		"queue.realtime": d.Queue.Realtime, "queue.kernel_route": d.Queue.KernelRoute, "queue.log_kernel_route": string(d.Queue.LogKernelRoute), "queue.vxlan_kernel_route": string(d.Queue.VXLANKernelRoute),
	}
}

// Load reads, decodes and validates the YAML file at path. Environment
// variables NFCLONE_<KEY> override scalar keys. The returned error, if any, is
// an Errors value listing every problem with its key path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := Parse(data, os.LookupEnv)
	if err == nil && len(c.Sessions) == 0 {
		return nil, Errors{{Path: "sessions", Msg: "at least one session is required"}}
	}
	return c, err
}

// DefaultsWithEnv returns the defaults with NFCLONE_* overrides applied; the
// commands that may run without a config file (flush, status) use it.
func DefaultsWithEnv() (*Config, error) {
	return Parse([]byte("{}"), os.LookupEnv)
}

// Parse decodes and validates YAML bytes; lookupEnv supplies NFCLONE_*
// overrides (nil: none).
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	for k, val := range scalarDefaults() {
		v.SetDefault(k, val)
	}
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, Errors{{Path: "(file)", Msg: yamlMessage(err, data)}}
	}
	if lookupEnv != nil {
		// Explicit binding rather than AutomaticEnv: the lookup is injectable
		// (tests) and only the scalar keys can be overridden.
		for k := range scalarDefaults() {
			env := EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(k, ".", "_"))
			if val, ok := lookupEnv(env); ok {
				v.Set(k, val)
			}
		}
	}
	var raw map[string]any = v.AllSettings()
	cfg := Default()
	var md mapstructure.Metadata
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:   &cfg,
		Metadata: &md,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			stringToScalarHook,
			numberToIntHook,
			numberToStringHook,
			boolToStringHook,
			scalarToSliceHook,
		),
	})
	if err != nil {
		return nil, fmt.Errorf("building config decoder: %w", err)
	}
	var errs Errors
	if err := dec.Decode(raw); err != nil {
		errs = append(errs, decodeProblems(err)...)
	}
	niceSet := v.InConfig("queue.nice")
	if lookupEnv != nil {
		_, env := lookupEnv(EnvPrefix + "_QUEUE_NICE")
		niceSet = niceSet || env
	}
	if !niceSet && holds(&cfg) {
		cfg.Queue.Nice = HoldNice
	}
	errs = append(errs, explicitZeroSamples(raw)...)
	for _, k := range md.Unused {
		errs = append(errs, Problem{Path: unusedPath(k), Msg: "unknown key"})
	}
	// A value that could not be decoded is reported once: Validate would
	// complain about the zero value left in its place.
	bad := map[string]bool{}
	for _, p := range errs {
		bad[p.Path] = true
	}
	for _, p := range Validate(&cfg) {
		if !bad[p.Path] {
			errs = append(errs, p)
		}
	}
	if len(errs) > 0 {
		errs.sort()
		lines := keyLines(data)
		for i := range errs {
			errs[i].Line = lineOf(lines, errs[i].Path)
		}
		return nil, errs
	}
	return &cfg, nil
}

// unusedPath quotes an odd key (empty, or with separators) in a key path.
func unusedPath(k string) string {
	i := strings.LastIndex(k, ".")
	prefix, key := "", k
	if i >= 0 && strings.HasSuffix(k[:i], "]") || i >= 0 && !strings.ContainsAny(k[i+1:], "[]") {
		prefix, key = k[:i], k[i+1:]
	}
	if key == "" || strings.ContainsAny(key, " ,.[]\"'") {
		key = strconv.Quote(key)
	}
	return joinPath(prefix, key)
}

// numberToIntHook refuses fractions and numbers that do not fit the field
// (instead of wrapping: mark 4294967297 must not become 1).
func numberToIntHook(from, to reflect.Type, data any) (any, error) {
	if !isInt(to.Kind()) && !isUint(to.Kind()) {
		return data, nil
	}
	v := reflect.ValueOf(data)
	switch {
	case isInt(from.Kind()):
		n := v.Int()
		if isUint(to.Kind()) && (n < 0 || reflect.Zero(to).OverflowUint(uint64(n))) || isInt(to.Kind()) && reflect.Zero(to).OverflowInt(n) {
			return nil, fmt.Errorf("%d does not fit in %s", n, fieldKind(to))
		}
	case isUint(from.Kind()):
		n := v.Uint()
		if isUint(to.Kind()) && reflect.Zero(to).OverflowUint(n) || isInt(to.Kind()) && (n > 1<<62 || reflect.Zero(to).OverflowInt(int64(n))) {
			return nil, fmt.Errorf("%d does not fit in %s", n, fieldKind(to))
		}
	case from.Kind() == reflect.Float32 || from.Kind() == reflect.Float64:
		f := v.Float()
		if f != float64(int64(f)) || f > 1<<62 || f < -(1<<62) {
			return nil, fmt.Errorf("%v is not a whole number that fits in %s", f, fieldKind(to))
		}
		return numberToIntHook(reflect.TypeOf(int64(0)), to, int64(f))
	}
	return data, nil
}

func numError(s string, to reflect.Type, err error, what string) error {
	if errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("%s does not fit in %s", s, fieldKind(to))
	}
	return fmt.Errorf("%q is not %s", s, what)
}

func isInt(k reflect.Kind) bool  { return k >= reflect.Int && k <= reflect.Int64 }
func isUint(k reflect.Kind) bool { return k >= reflect.Uint && k <= reflect.Uint64 }

func fieldKind(t reflect.Type) string {
	if isUint(t.Kind()) {
		return fmt.Sprintf("%d bits unsigned", t.Bits())
	}
	return fmt.Sprintf("%d bits", t.Bits())
}

// numberToStringHook lets `protocol: 47` and `destination_ports: 443` be
// written without quotes.
func numberToStringHook(from, to reflect.Type, data any) (any, error) {
	if to.Kind() == reflect.String && (isInt(from.Kind()) || isUint(from.Kind())) {
		return fmt.Sprint(data), nil
	}
	return data, nil
}

// stringToScalarHook lets environment variables (always strings) set numbers
// and booleans. YAML values of the wrong type are still refused.
func stringToScalarHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String {
		return data, nil
	}
	s := strings.TrimSpace(data.(string))
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 0, to.Bits())
		if err != nil {
			return nil, numError(s, to, err, "a number")
		}
		return n, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 0, to.Bits())
		if err != nil {
			return nil, numError(s, to, err, "a non-negative number")
		}
		return n, nil
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", s)
		}
		return b, nil
	}
	return data, nil
}

// boolToStringHook keeps `arp: off` working when a YAML 1.1 parser or a user
// writes it as a boolean.
func boolToStringHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() == reflect.Bool && to.Kind() == reflect.String {
		if data.(bool) {
			return "on", nil
		}
		return "off", nil
	}
	return data, nil
}

// scalarToSliceHook lets `remote` be one string or a list ("a,b" splits too).
func scalarToSliceHook(from, to reflect.Type, data any) (any, error) {
	if to.Kind() != reflect.Slice || to.Elem().Kind() != reflect.String {
		return data, nil
	}
	if from.Kind() == reflect.String {
		var out []string
		for _, p := range strings.Split(data.(string), ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out, nil
	}
	return data, nil
}

var (
	reQuoted   = regexp.MustCompile(`^'([^']*)' (.*)$`)
	reUnused   = regexp.MustCompile(`^'([^']*)' has invalid keys: (.*)$`)
	reYAMLLine = regexp.MustCompile(`yaml: (line \d+: )?`)
)

// enumTypeNames are the config's named string types as mapstructure names
// them in a decode error, and what a YAML author knows them as.
var enumTypeNames = strings.NewReplacer(
	"'config.Method'", "'string'", "'config.Kind'", "'string'", "'config.Direction'", "'string'",
	"'config.Action'", "'string'", "'config.ARP'", "'string'", "'config.Format'", "'string'")

// decodeProblems turns mapstructure's errors into key-path problems.
func decodeProblems(err error) Errors {
	var out Errors
	var msgs []string
	var me interface{ Unwrap() []error }
	if errors.As(err, &me) {
		for _, e := range me.Unwrap() {
			msgs = append(msgs, splitLines(e.Error())...)
		}
	} else {
		msgs = splitLines(err.Error())
	}
	for _, m := range msgs {
		m = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(m), "* "))
		m = enumTypeNames.Replace(m) // the user wrote YAML: they are strings there
		if m == "" || strings.HasSuffix(m, "error(s) decoding:") || strings.HasPrefix(m, "decoding failed") {
			continue
		}
		if sm := reUnused.FindStringSubmatch(m); sm != nil {
			for _, k := range strings.Split(sm[2], ",") {
				if k = strings.TrimSpace(k); k == "" {
					k = `""`
				}
				out = append(out, Problem{Path: joinPath(sm[1], k), Msg: "unknown key"})
			}
			continue
		}
		if sm := reQuoted.FindStringSubmatch(m); sm != nil {
			if sm[1] == "" {
				sm[1] = "(top level)"
			}
			out = append(out, Problem{Path: sm[1], Msg: sm[2]})
			continue
		}
		out = append(out, Problem{Path: "(config)", Msg: m})
	}
	return out
}

func splitLines(s string) []string { return strings.Split(s, "\n") }

func joinPath(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func yamlMessage(err error, data []byte) string {
	s := err.Error()
	if i := strings.Index(s, "yaml: "); i >= 0 {
		s = yamlProblemLine(data, s[i:])
	}
	s = reYAMLLine.ReplaceAllStringFunc(s, func(m string) string {
		return strings.TrimPrefix(m, "yaml: ")
	})
	var parts []string
	for _, p := range strings.Split(s, "\n") {
		if p = strings.TrimSpace(p); p != "" && p != "unmarshal errors:" {
			parts = append(parts, strings.TrimSuffix(p, "unmarshal errors:"))
		}
	}
	return "not valid YAML: " + strings.Join(parts, "; ")
}

// Problem is one configuration mistake. Line, when not 0, is the line of
// the config file where its key (or the map it is missing from) is.
type Problem struct {
	Path string
	Msg  string
	Line int
}

func (p Problem) String() string { return p.Path + ": " + p.Msg }

// Errors lists every problem of a configuration; it is an error.
type Errors []Problem

func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, p := range e {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func (e Errors) sort() {
	sort.SliceStable(e, func(i, j int) bool { return pathLess(e[i].Path, e[j].Path) })
}

// pathLess orders key paths so that sessions[2] comes before sessions[10].
func pathLess(a, b string) bool {
	ka, kb := pathKey(a), pathKey(b)
	for i := 0; i < len(ka) && i < len(kb); i++ {
		if ka[i] != kb[i] {
			na, ea := strconv.Atoi(ka[i])
			nb, eb := strconv.Atoi(kb[i])
			if ea == nil && eb == nil {
				return na < nb
			}
			return ka[i] < kb[i]
		}
	}
	return len(ka) < len(kb)
}

func pathKey(p string) []string {
	return strings.FieldsFunc(p, func(r rune) bool { return r == '.' || r == '[' || r == ']' })
}

// StateDirOf reads the state_dir of a config file that may not validate
// (NFCLONE_STATE_DIR first, as Load): status finds a running daemon
// through it after the file was edited into something its reload refused.
// ok is false when neither says.
func StateDirOf(path string) (dir string, ok bool) {
	if d := os.Getenv(EnvPrefix + "_STATE_DIR"); d != "" {
		return d, true
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	var raw struct {
		StateDir string `yaml:"state_dir"`
	}
	if yaml.Unmarshal(data, &raw) != nil || raw.StateDir == "" {
		// Not YAML any more: the key may still be on a line of its own.
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, found := strings.Cut(l, ":"); found && strings.TrimSpace(k) == "state_dir" && !strings.HasPrefix(l, " ") {
				v, _, _ = strings.Cut(v, " #")
				raw.StateDir = strings.Trim(strings.TrimSpace(v), `"'`)
			}
		}
	}
	return raw.StateDir, raw.StateDir != "" && filepath.IsAbs(raw.StateDir)
}

// holds reports whether a session holds its originals (hold: true).
func holds(c *Config) bool {
	for i := range c.Sessions {
		if c.Sessions[i].Hold {
			return true
		}
	}
	return false
}
