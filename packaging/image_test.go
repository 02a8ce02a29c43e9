package packaging

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildImage runs what `make image` runs into a temporary directory and
// returns the archive's path.
func buildImage(t *testing.T, created string) string {
	t.Helper()
	bin := buildNfclone(t, "CGO_ENABLED=0")
	out := filepath.Join(t.TempDir(), "nfclone-image.tar")
	cmd := exec.Command("go", "run", "./packaging/image", "-binary", bin, "-version", "9.9.9-test",
		"-revision", "0123456789abcdef", "-created", created, "-out", out)
	cmd.Dir = ".."
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./packaging/image: %v\n%s", err, o)
	}
	return out
}

// TestImage inspects the image with skopeo: entrypoint, architecture, OS,
// labels, one layer; checks the name the archive gives it is the
// DaemonSet's image; and runs `nfclone version` from the image's root file
// system (chroot: the binary alone on an empty base), or with podman when
// podman works here.
func TestImage(t *testing.T) {
	skopeo := mustHaveTool(t, "skopeo", "the Debian package skopeo")
	archive := buildImage(t, "1767225600") // 2026-01-01
	inspect := func(args ...string) map[string]any {
		t.Helper()
		o, err := exec.Command(skopeo, append([]string{"inspect"}, append(args, "oci-archive:"+archive)...)...).Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("skopeo inspect %v: %v\n%s", args, err, stderr)
		}
		var m map[string]any
		if err := json.Unmarshal(o, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	info := inspect()
	if info["Architecture"] != "amd64" || info["Os"] != "linux" {
		t.Errorf("architecture %v, os %v", info["Architecture"], info["Os"])
	}
	if layers, _ := info["Layers"].([]any); len(layers) != 1 {
		t.Errorf("layers %v, want 1", info["Layers"])
	}
	labels, _ := info["Labels"].(map[string]any)
	for k, want := range map[string]string{
		"org.opencontainers.image.title":    "nfclone",
		"org.opencontainers.image.version":  "9.9.9-test",
		"org.opencontainers.image.revision": "0123456789abcdef",
		"org.opencontainers.image.created":  "2026-01-01T00:00:00Z",
		"org.opencontainers.image.source":   "https://github.com/nfclone/nfclone",
	} {
		if labels[k] != want {
			t.Errorf("label %s=%v, want %s", k, labels[k], want)
		}
	}
	cfg := inspect("--config")
	c, _ := cfg["config"].(map[string]any)
	if ep, _ := json.Marshal(c["Entrypoint"]); string(ep) != `["/nfclone"]` {
		t.Errorf("entrypoint %s, want [\"/nfclone\"]", ep)
	}
	t.Logf("skopeo: %v/%v, digest %v, entrypoint %v, cmd %v", info["Os"], info["Architecture"], info["Digest"], c["Entrypoint"], c["Cmd"])

	// The archive names the image as the DaemonSet does.
	if ref := archiveRefName(t, archive); ref != imageRef {
		t.Errorf("archive names its image %q, the DaemonSet uses %q", ref, imageRef)
	}

	if podman, err := exec.LookPath("podman"); err == nil && exec.Command(podman, "info").Run() == nil {
		o, err := exec.Command(podman, "run", "--rm", "--network=none", "oci-archive:"+archive, "version").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(o), "nfclone ") {
			t.Errorf("podman run ... version: %v %q", err, o)
		}
	} else {
		t.Log("podman not available here: the image is run by chroot into its root file system instead")
	}
	if os.Geteuid() != 0 {
		t.Log("not root: not running the image's binary")
		return
	}
	root := t.TempDir()
	extractLayers(t, archive, root)
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 || entries[0].Name() != "nfclone" {
		t.Errorf("image root file system holds %v, want only nfclone", entries)
	}
	o, err := exec.Command("chroot", root, "/nfclone", "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(o), "nfclone ") {
		t.Fatalf("chroot ROOTFS /nfclone version: %v %q", err, o)
	}
	t.Logf("in the image's root file system: %s", strings.TrimSpace(string(o)))

	// The binary alone renders the example config (the DaemonSet mounts
	// the config at /etc/nfclone; render touches nothing of the host).
	ex, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc/nfclone"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/nfclone/nfclone.yaml"), ex, 0o644); err != nil {
		t.Fatal(err)
	}
	o, err = exec.Command("chroot", root, "/nfclone", "render", "-c", "/etc/nfclone/nfclone.yaml").CombinedOutput()
	if err != nil || !strings.Contains(string(o), "table ") {
		t.Fatalf("chroot ROOTFS /nfclone render: %v\n%s", err, o)
	}
}

// TestImageReproducible: two builds from the same inputs are byte-identical.
func TestImageReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	a := buildImage(t, "1767225600")
	b := buildImage(t, "1767225600")
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if len(da) == 0 || string(da) != string(db) {
		t.Errorf("two builds differ (%d and %d bytes)", len(da), len(db))
	}
}

// ociFiles reads the archive's files into memory (a few MB).
func ociFiles(t *testing.T, archive string) map[string][]byte {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
	return files
}

type ociIndex struct {
	Manifests []struct {
		Digest      string            `json:"digest"`
		Annotations map[string]string `json:"annotations"`
	} `json:"manifests"`
}

func archiveRefName(t *testing.T, archive string) string {
	t.Helper()
	var idx ociIndex
	if err := json.Unmarshal(ociFiles(t, archive)["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %v (%d manifests)", err, len(idx.Manifests))
	}
	return idx.Manifests[0].Annotations["org.opencontainers.image.ref.name"]
}

func blob(t *testing.T, files map[string][]byte, digest string) []byte {
	t.Helper()
	b, ok := files["blobs/"+strings.Replace(digest, ":", "/", 1)]
	if !ok {
		t.Fatalf("blob %s missing", digest)
	}
	return b
}

// extractLayers unpacks the image's layers (regular files only) into root.
func extractLayers(t *testing.T, archive, root string) {
	t.Helper()
	files := ociFiles(t, archive)
	var idx ociIndex
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	var m struct {
		Layers []struct {
			Digest string `json:"digest"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(blob(t, files, idx.Manifests[0].Digest), &m); err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		zr, err := gzip.NewReader(strings.NewReader(string(blob(t, files, l.Digest))))
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Typeflag != tar.TypeReg || strings.Contains(h.Name, "..") {
				t.Fatalf("unexpected layer entry %q", h.Name)
			}
			p := filepath.Join(root, filepath.Clean("/"+h.Name))
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, os.FileMode(h.Mode)&0o777)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
}
