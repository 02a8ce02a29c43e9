// Command image builds nfclone's container image without a container
// daemon: the static binary as /nfclone on an empty base, written as an
// OCI archive (an OCI image layout in a tar) that skopeo, podman, ctr and
// crane read. `make image` runs it:
//
//	go run ./packaging/image -binary BIN -version V -out bin/nfclone-image.tar
//
// The output depends only on its inputs (file times and the created date
// come from -created, SOURCE_DATE_EPOCH in the Makefile).
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// RefName is the name the archive gives its image (the annotation
// org.opencontainers.image.ref.name): podman load and ctr import name the
// image so, and packaging/kubernetes/daemonset.yaml uses it.
const RefName = "localhost/nfclone:latest"

// Spec is what the image is made of.
type Spec struct {
	Binary   []byte // the static nfclone binary
	Version  string
	Revision string // commit
	Created  time.Time
	Arch     string // GOARCH
}

// Labels are the image's org.opencontainers.image.* labels.
func (s Spec) Labels() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":         "nfclone",
		"org.opencontainers.image.description":   "Packet mirroring engine for Linux (nftables dup, NFQUEUE, NFLOG)",
		"org.opencontainers.image.version":       s.Version,
		"org.opencontainers.image.revision":      s.Revision,
		"org.opencontainers.image.created":       s.Created.UTC().Format(time.RFC3339),
		"org.opencontainers.image.source":        "https://github.com/nfclone/nfclone",
		"org.opencontainers.image.url":           "https://github.com/nfclone/nfclone",
		"org.opencontainers.image.documentation": "https://github.com/nfclone/nfclone/blob/main/packaging/README.md",
	}
}

// Image builds the image: one layer holding /nfclone (0755, root), the
// entrypoint /nfclone, OCI media types.
func Image(s Spec) (v1.Image, error) {
	var layerTar bytes.Buffer
	tw := tar.NewWriter(&layerTar)
	hdr := &tar.Header{
		Name: "nfclone", Mode: 0o755, Size: int64(len(s.Binary)), ModTime: s.Created,
		Typeflag: tar.TypeReg, Uname: "root", Gname: "root", Format: tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	if _, err := tw.Write(s.Binary); err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	data := layerTar.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: s.Created}, CreatedBy: "nfclone packaging/image", Comment: "the static nfclone binary"},
	})
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = s.Arch
	cf.OS = "linux"
	cf.Created = v1.Time{Time: s.Created}
	cf.Config.Entrypoint = []string{"/nfclone"}
	cf.Config.Cmd = []string{"run", "-c", "/etc/nfclone/nfclone.yaml"}
	cf.Config.Env = []string{"NFCLONE_STATE_DIR=/run/nfclone"}
	cf.Config.Labels = s.Labels()
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	return mutate.CreatedAt(img, v1.Time{Time: s.Created})
}

// WriteArchive writes img as an OCI archive at path: an OCI image layout
// (oci-layout, index.json, blobs/) in a tar, entries sorted and dated
// created.
func WriteArchive(path string, img v1.Image, created time.Time) error {
	dir, err := os.MkdirTemp("", "nfclone-image-")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("image: layout: %w", err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": RefName,
	})); err != nil {
		return fmt.Errorf("image: layout: %w", err)
	}
	var files []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("image: layout: %w", err)
	}
	sort.Strings(files)
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, p := range files {
		rel, _ := filepath.Rel(dir, p)
		st, err := os.Stat(p)
		if err != nil {
			return errors.Join(fmt.Errorf("image: %w", err), f.Close())
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: created, Mode: 0o644, Typeflag: tar.TypeReg, Size: st.Size(), Format: tar.FormatPAX}
		if st.IsDir() {
			hdr.Name += "/"
			hdr.Mode, hdr.Typeflag, hdr.Size = 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return errors.Join(fmt.Errorf("image: %w", err), f.Close())
		}
		if !st.IsDir() {
			if err := copyFile(tw, p); err != nil {
				return errors.Join(fmt.Errorf("image: %w", err), f.Close())
			}
		}
	}
	if err := tw.Close(); err != nil {
		return errors.Join(fmt.Errorf("image: %w", err), f.Close())
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	return os.Rename(tmp, path)
}

func copyFile(w io.Writer, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

func main() {
	bin := flag.String("binary", "", "static nfclone binary (CGO_ENABLED=0)")
	version := flag.String("version", "dev", "image version label")
	revision := flag.String("revision", "", "commit label")
	created := flag.Int64("created", 0, "creation time, seconds since the epoch (SOURCE_DATE_EPOCH)")
	arch := flag.String("arch", "amd64", "architecture (GOARCH)")
	out := flag.String("out", "bin/nfclone-image.tar", "OCI archive to write")
	flag.Parse()
	if err := build(*bin, *out, Spec{Version: *version, Revision: *revision, Created: time.Unix(*created, 0).UTC(), Arch: *arch}); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func build(bin, out string, s Spec) error {
	if bin == "" {
		return errors.New("-binary is required")
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	s.Binary = b
	img, err := Image(s)
	if err != nil {
		return err
	}
	return WriteArchive(out, img, s.Created)
}
