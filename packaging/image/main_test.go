package main

import (
	"slices"
	"testing"
	"time"
)

func TestImageConfig(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := Spec{Binary: []byte("\x7fELF..."), Version: "1.2.3", Revision: "abc", Created: created, Arch: "amd64"}
	img, err := Image(s)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "amd64" || cf.OS != "linux" || !cf.Created.Time.Equal(created) {
		t.Errorf("arch %s os %s created %v", cf.Architecture, cf.OS, cf.Created)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/nfclone"}) {
		t.Errorf("entrypoint %v", cf.Config.Entrypoint)
	}
	if cf.Config.Labels["org.opencontainers.image.version"] != "1.2.3" || cf.Config.Labels["org.opencontainers.image.created"] != "2026-01-01T00:00:00Z" {
		t.Errorf("labels %v", cf.Config.Labels)
	}
	mt, _ := img.MediaType()
	if mt != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("manifest media type %s", mt)
	}
	layers, _ := img.Layers()
	if len(layers) != 1 {
		t.Fatalf("%d layers", len(layers))
	}
	d1, _ := img.Digest()
	img2, _ := Image(s)
	if d2, _ := img2.Digest(); d1 != d2 {
		t.Errorf("not reproducible: %v %v", d1, d2)
	}
}
