package packaging

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/nfclone/nfclone/config"
)

const (
	unitPath      = "systemd/nfclone.service"
	daemonSetPath = "kubernetes/daemonset.yaml"
	examplePath   = "nfclone.example.yaml"
	installedBin  = "/usr/local/bin/nfclone"
	configPath    = "/etc/nfclone/nfclone.yaml"
	imageRef      = "localhost/nfclone:latest" // packaging/image.RefName
)

// mustHaveTool returns the tool's path, or skips (fails when NFCLONE_E2E=1).
func mustHaveTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("NFCLONE_E2E") == "1" {
			t.Fatalf("%s not found (NFCLONE_E2E=1): install %s (scripts/deps.sh)", name, pkg)
		}
		t.Skipf("%s not found: install %s", name, pkg)
	}
	return p
}

// unitKeys parses a unit file into key → values (a key may repeat).
func unitKeys(t *testing.T, data []byte) map[string][]string {
	t.Helper()
	keys := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == ';' || l[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("unit: bad line %q", l)
		}
		keys[k] = append(keys[k], v)
	}
	return keys
}

func TestSystemdUnitContent(t *testing.T) {
	data, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	k := unitKeys(t, data)
	one := func(key string) string {
		if len(k[key]) != 1 {
			t.Errorf("%s: %d values, want 1", key, len(k[key]))
			return ""
		}
		return k[key][0]
	}
	fields := func(key string) []string {
		f := strings.Fields(one(key))
		slices.Sort(f)
		return f
	}
	if got := one("ExecStart"); got != installedBin+" run -c "+configPath {
		t.Errorf("ExecStart=%s", got)
	}
	if got := one("User"); got != "nfclone" {
		t.Errorf("User=%s", got)
	}
	caps := []string{"CAP_NET_ADMIN", "CAP_NET_RAW"}
	for _, key := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		if got := fields(key); !slices.Equal(got, caps) {
			t.Errorf("%s=%v, want exactly %v", key, got, caps)
		}
	}
	for key, want := range map[string]string{
		"NoNewPrivileges":      "yes",
		"ExecReload":           "/bin/kill -HUP $MAINPID",
		"KillSignal":           "SIGTERM",
		"Restart":              "on-failure",
		"Environment":          "NFCLONE_STATE_DIR=/run/nfclone",
		"RuntimeDirectory":     "nfclone",
		"RuntimeDirectoryMode": "0700",
		"ProtectSystem":        "strict",
	} {
		if got := one(key); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}
	fam := fields("RestrictAddressFamilies")
	for _, f := range []string{"AF_NETLINK", "AF_PACKET", "AF_INET", "AF_INET6", "AF_UNIX"} {
		if !slices.Contains(fam, f) {
			t.Errorf("RestrictAddressFamilies lacks %s", f)
		}
	}
	// nfclone works in the host's network namespace.
	for _, key := range []string{"PrivateNetwork", "DynamicUser", "PrivateUsers"} {
		for _, v := range k[key] {
			if v == "yes" || v == "true" {
				t.Errorf("%s=%s would cut nfclone off the host's network", key, v)
			}
		}
	}
}

// TestSystemdVerify runs systemd-analyze verify on the unit, its ExecStart
// pointing at a freshly built nfclone.
func TestSystemdVerify(t *testing.T) {
	sa := mustHaveTool(t, "systemd-analyze", "the Debian package systemd")
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not found")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "nfclone")
	build := exec.Command(gobin, "build", "-o", bin, "./cmd/nfclone")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/nfclone: %v\n%s", err, out)
	}
	data, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(installedBin)) {
		t.Fatalf("unit does not run %s", installedBin)
	}
	unit := filepath.Join(dir, "nfclone.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(data, []byte(installedBin), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sa, "verify", unit)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice", "SYSTEMD_PAGER=cat")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// verify exits 0 on some problems; anything said about our unit is one.
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "nfclone.service") {
			t.Errorf("systemd-analyze verify: %s", l)
		}
	}
	// The built binary answers --help (the unit's ExecStart is runnable).
	if out, err := exec.Command(bin, "run", "--help").CombinedOutput(); err != nil {
		t.Errorf("nfclone run --help: %v\n%s", err, out)
	}
}

// k8s is the part of the manifests the test looks at.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Template struct {
			Spec struct {
				HostNetwork                   bool `yaml:"hostNetwork"`
				TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
				Containers                    []struct {
					Name  string   `yaml:"name"`
					Image string   `yaml:"image"`
					Args  []string `yaml:"args"`
					Env   []struct {
						Name  string `yaml:"name"`
						Value string `yaml:"value"`
					} `yaml:"env"`
					SecurityContext struct {
						Privileged               *bool `yaml:"privileged"`
						AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
						Capabilities             struct {
							Add  []string `yaml:"add"`
							Drop []string `yaml:"drop"`
						} `yaml:"capabilities"`
					} `yaml:"securityContext"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name      string `yaml:"name"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
					HostPath *struct {
						Path string `yaml:"path"`
					} `yaml:"hostPath"`
					EmptyDir any `yaml:"emptyDir"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func readManifests(t *testing.T) (ds, cm *k8sObject) {
	t.Helper()
	f, err := os.Open(daemonSetPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(false)
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", daemonSetPath, err)
		}
		switch o.Kind {
		case "DaemonSet":
			ds = &o
		case "ConfigMap":
			cm = &o
		case "":
		default:
			t.Errorf("unexpected kind %s", o.Kind)
		}
	}
	if ds == nil || cm == nil {
		t.Fatalf("%s: want a DaemonSet and a ConfigMap", daemonSetPath)
	}
	return ds, cm
}

func TestDaemonSet(t *testing.T) {
	ds, cm := readManifests(t)
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("hostNetwork is not true")
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil || *g < 10 {
		t.Errorf("terminationGracePeriodSeconds %v: too short for cleanup", g)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Image != imageRef { // the name `make image` gives its image
		t.Errorf("image %s", c.Image)
	}
	if want := []string{"run", "-c", configPath}; !slices.Equal(c.Args, want) {
		t.Errorf("args %v, want %v", c.Args, want)
	}
	sc := c.SecurityContext
	add := slices.Clone(sc.Capabilities.Add)
	slices.Sort(add)
	if want := []string{"NET_ADMIN", "NET_RAW"}; !slices.Equal(add, want) {
		t.Errorf("capabilities.add %v, want exactly %v", sc.Capabilities.Add, want)
	}
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", sc.Capabilities.Drop)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}

	// The config comes from the ConfigMap, mounted where args say.
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	var cfgVol, stateVol string
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == cm.Metadata.Name {
			cfgVol = v.Name
		}
		if mounts[v.Name] == "/run/nfclone" && (v.HostPath != nil || v.EmptyDir != nil) {
			stateVol = v.Name
		}
	}
	if cfgVol == "" {
		t.Fatalf("no volume from ConfigMap %s", cm.Metadata.Name)
	}
	if dir := mounts[cfgVol]; dir != filepath.Dir(configPath) {
		t.Errorf("ConfigMap mounted at %q, want %s", dir, filepath.Dir(configPath))
	}
	if stateVol == "" {
		t.Error("no hostPath or emptyDir volume at /run/nfclone (state_dir)")
	}
	data, ok := cm.Data[filepath.Base(configPath)]
	if !ok {
		t.Fatalf("ConfigMap has no key %s", filepath.Base(configPath))
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["NFCLONE_STATE_DIR"] != "/run/nfclone" {
		t.Errorf("NFCLONE_STATE_DIR=%q", env["NFCLONE_STATE_DIR"])
	}

	// nfclone accepts the ConfigMap's configuration.
	if _, err := config.Parse([]byte(data), nil); err != nil {
		t.Errorf("ConfigMap %s: %v", cm.Metadata.Name, err)
	}
}

func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(data, nil)
	if err != nil {
		t.Fatalf("%s: %v", examplePath, err)
	}
	if c.StateDir != "/run/nfclone" || c.Metrics.Listen != "127.0.0.1:9464" {
		t.Errorf("state_dir %q, metrics.listen %q", c.StateDir, c.Metrics.Listen)
	}
}

// syscallGroup expands a systemd syscall group (or returns a single name)
// with systemd-analyze, nested groups included.
func syscallGroup(t *testing.T, sa, name string, cache map[string][]string) []string {
	t.Helper()
	if !strings.HasPrefix(name, "@") {
		return []string{name}
	}
	if c, ok := cache[name]; ok {
		return c
	}
	out, err := exec.Command(sa, "syscall-filter", name).Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter %s: %v", name, err)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n")[1:] {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		names = append(names, syscallGroup(t, sa, l, cache)...)
	}
	cache[name] = names
	return names
}

// allowedSyscalls applies SystemCallFilter= lines as systemd.exec(5) says:
// a first line without "~" starts an allow list, later lines add to it, or
// remove from it with "~"; a first line with "~" starts a deny list.
// allowed(name) reports whether the resulting filter lets name through.
func allowedSyscalls(t *testing.T, sa string, lines []string) (allowed func(string) bool) {
	t.Helper()
	cache := map[string][]string{}
	set := map[string]bool{}
	denyList := len(lines) > 0 && strings.HasPrefix(lines[0], "~")
	for _, l := range lines {
		neg := strings.HasPrefix(l, "~")
		for _, n := range strings.Fields(strings.TrimPrefix(l, "~")) {
			for _, s := range syscallGroup(t, sa, n, cache) {
				set[s] = neg == denyList // allow list: present = allowed; deny list: present = denied
			}
		}
	}
	return func(name string) bool { return set[name] != denyList }
}

// The unit's syscall filter lets through what nfclone calls at start with
// its defaults (setpriority: queue.nice), and keeps realtime scheduling
// out unless the realtime drop-in is installed, which lets sched_setattr
// in and lifts RestrictRealtime.
func TestSystemdSyscallFilter(t *testing.T) {
	sa := mustHaveTool(t, "systemd-analyze", "the Debian package systemd")
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	dropIn, err := os.ReadFile("systemd/realtime.conf")
	if err != nil {
		t.Fatal(err)
	}
	base := unitKeys(t, unit)
	allowed := allowedSyscalls(t, sa, base["SystemCallFilter"])
	for _, s := range []string{"setpriority", "socket", "sendmmsg", "recvmsg", "setsockopt", "getpriority"} {
		if !allowed(s) {
			t.Errorf("the unit's SystemCallFilter denies %s", s)
		}
	}
	for _, s := range []string{"sched_setattr", "reboot", "setrlimit"} {
		if allowed(s) {
			t.Errorf("the unit's SystemCallFilter lets %s through", s)
		}
	}
	if got := base["RestrictRealtime"]; !slices.Equal(got, []string{"yes"}) {
		t.Errorf("RestrictRealtime=%v, want yes", got)
	}
	extra := unitKeys(t, dropIn)
	withDropIn := allowedSyscalls(t, sa, append(base["SystemCallFilter"], extra["SystemCallFilter"]...))
	if !withDropIn("sched_setattr") || !withDropIn("setpriority") || withDropIn("reboot") {
		t.Errorf("with the realtime drop-in: sched_setattr %v, setpriority %v, reboot %v; want true, true, false",
			withDropIn("sched_setattr"), withDropIn("setpriority"), withDropIn("reboot"))
	}
	if !slices.Equal(extra["RestrictRealtime"], []string{"no"}) || len(extra["LimitRTPRIO"]) != 1 {
		t.Errorf("the realtime drop-in: RestrictRealtime=%v LimitRTPRIO=%v", extra["RestrictRealtime"], extra["LimitRTPRIO"])
	}
}
