package packaging

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/nfclone/nfclone/config"
)

const schemaPath = "nfclone.schema.json"

// TestSchemaCurrent: the checked-in schema is what the Go types generate.
func TestSchemaCurrent(t *testing.T) {
	want, err := config.JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: regenerate it with `make schema` (go run ./cmd/nfclone schema > packaging/%s)", schemaPath, schemaPath)
	}
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", schemaPath, err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(config.SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(config.SchemaID)
	if err != nil {
		t.Fatalf("compiling %s: %v", schemaPath, err)
	}
	return s
}

// yamlInstance decodes YAML as an editor's YAML-to-JSON step does.
func yamlInstance(data []byte) (any, error) {
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(j))
}

// validConfigs: every configuration nfclone's own loader accepts that this
// repository shows a user: the example, the DaemonSet's ConfigMap, the
// README's YAML blocks and the config fuzz corpus's valid seeds.
func validConfigs(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	ex, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	out[examplePath] = ex
	ds, err := os.ReadFile(daemonSetPath)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(ds))
	for {
		var o k8sObject
		if err := dec.Decode(&o); err != nil {
			break
		}
		if d, ok := o.Data["nfclone.yaml"]; ok {
			out[daemonSetPath+" ConfigMap"] = []byte(d)
		}
	}
	docs, _ := filepath.Glob("../docs/*.md")
	for _, name := range append([]string{"../README.md"}, docs...) {
		text, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for i, block := range fencedBlocks(text, "yaml") {
			out[strings.TrimPrefix(name, "../")+" yaml block "+strconv.Itoa(i+1)] = block
		}
	}
	seeds, _ := filepath.Glob("../config/testdata/fuzz/FuzzParse/*")
	for _, s := range seeds {
		if b, ok := fuzzSeed(t, s); ok {
			out[s] = b
		}
	}
	for name, b := range out {
		if _, err := config.Parse(b, nil); err != nil {
			delete(out, name) // not a valid config (README fragments, hostile seeds)
		}
	}
	return out
}

func fencedBlocks(md []byte, lang string) [][]byte {
	var out [][]byte
	var cur *bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(md))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(l) == "```"+lang:
			cur = &bytes.Buffer{}
		case cur != nil && strings.TrimSpace(l) == "```":
			out = append(out, cur.Bytes())
			cur = nil
		case cur != nil:
			cur.WriteString(l + "\n")
		}
	}
	return out
}

var reSeed = regexp.MustCompile(`(?m)^\[\]byte\((".*")\)$`)

// fuzzSeed reads a "go test fuzz v1" file with one []byte value.
func fuzzSeed(t *testing.T, path string) ([]byte, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := reSeed.FindSubmatch(b)
	if m == nil {
		return nil, false
	}
	s, err := strconv.Unquote(string(m[1]))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(s), true
}

// TestSchemaAcceptsValidConfigs: the schema never flags a config nfclone
// accepts (an editor must not underline a working file).
func TestSchemaAcceptsValidConfigs(t *testing.T) {
	s := compileSchema(t)
	cfgs := validConfigs(t)
	for _, want := range []string{examplePath, daemonSetPath + " ConfigMap", "../config/testdata/fuzz/FuzzParse/valid"} {
		if _, ok := cfgs[want]; !ok {
			t.Errorf("%s: missing or not accepted by config.Parse", want)
		}
	}
	for name, b := range cfgs {
		inst, err := yamlInstance(b)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if err := s.Validate(inst); err != nil {
			t.Errorf("%s: accepted by nfclone, refused by the schema: %v", name, err)
		}
	}
	t.Logf("%d valid configs checked", len(cfgs))
}

// TestSchemaRejectsHostileConfigs: every file of the hostile corpus
// (cmd/nfclone/testdata/hostile) is refused, by the YAML parser or by the
// schema.
func TestSchemaRejectsHostileConfigs(t *testing.T) {
	s := compileSchema(t)
	files, _ := filepath.Glob("../cmd/nfclone/testdata/hostile/*.yaml")
	if len(files) < 10 {
		t.Fatalf("hostile corpus missing: %v", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		inst, err := yamlInstance(b)
		if err != nil {
			t.Logf("%s: refused by the YAML parser: %v", filepath.Base(f), err)
			continue
		}
		err = s.Validate(inst)
		if err == nil {
			t.Errorf("%s: the schema accepts it", filepath.Base(f))
			continue
		}
		t.Logf("%s: refused by the schema: %s", filepath.Base(f), strings.SplitN(err.Error(), "\n", 3)[1])
	}
}

// TestExampleReferencesSchema: editors find the schema from the example.
func TestExampleReferencesSchema(t *testing.T) {
	b, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^# yaml-language-server: \$schema=(\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s has no yaml-language-server $schema line", examplePath)
	}
	if _, err := os.Stat(string(m[1])); err != nil {
		t.Errorf("$schema=%s: %v", m[1], err)
	}
}

// TestSchemaRejectsMistakes: typical mistakes nfclone refuses are
// underlined by the schema too.
func TestSchemaRejectsMistakes(t *testing.T) {
	s := compileSchema(t)
	base := "sessions:\n  - name: s\n    sources: [{interface: e0}]\n"
	for name, y := range map[string]string{
		"typo in a key":        base + "    targets: [{kind: device, devcie: e1}]\n",
		"unknown kind":         base + "    targets: [{kind: tap, device: e1}]\n",
		"vxlan without vni":    base + "    targets: [{kind: vxlan, remote: \"10.0.0.1:4789\"}]\n",
		"vni out of range":     base + "    targets: [{kind: vxlan, remote: \"10.0.0.1:4789\", vni: 16777216}]\n",
		"key of another kind":  base + "    targets: [{kind: device, device: e1, vni: 1}]\n",
		"gateway without one":  base + "    targets: [{kind: gateway, device: e1}]\n",
		"bad method":           "sessions:\n  - {name: s, method: nfqueue, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}\n",
		"bad rate":             "sessions:\n  - {name: s, rate: fast, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}\n",
		"rule without action":  "sessions:\n  - {name: s, rules: [{number: 1}], sources: [{interface: e0}], targets: [{kind: device, device: e1}]}\n",
		"interface too long":   "sessions:\n  - {name: s, sources: [{interface: abcdefghijklmnop}], targets: [{kind: device, device: e1}]}\n",
		"no sessions":          "table: nfclone\n",
		"queue.workers zero":   "queue: {workers: 0}\n" + base + "    targets: [{kind: device, device: e1}]\n",
		"relative pcap path":   base + "    method: queue\n    targets: [{kind: pcap, path: x.pcap}]\n",
		"mark wider than 32b":  "mark: 0x100000000\n" + base + "    targets: [{kind: device, device: e1}]\n",
		"name with a dash":     "sessions:\n  - {name: my-s, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}\n",
		"ports not a list":     "sessions:\n  - {name: s, rules: [{number: 1, action: accept, protocol: tcp, destination_ports: http}], sources: [{interface: e0}], targets: [{kind: device, device: e1}]}\n",
		"direction misspelled": "sessions:\n  - {name: s, sources: [{interface: e0, direction: in}], targets: [{kind: device, device: e1}]}\n",
	} {
		if c, err := config.Load(writeTemp(t, y)); err == nil {
			t.Errorf("%s: nfclone accepts it: %+v", name, c)
		}
		inst, err := yamlInstance([]byte(y))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := s.Validate(inst); err == nil {
			t.Errorf("%s: the schema accepts it", name)
		}
	}
}

func writeTemp(t *testing.T, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
