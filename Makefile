# nfclone — see README.md. `make demo` and `make test` do all the set-up.
GO       ?= go
BIN      := bin/nfclone
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
PKGS     := ./...
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(shell $(GO) env GOPATH)/bin/staticcheck)

.PHONY: all build deps test lint unit e2e fuzz demo bench clean lab-clean allocs schema man deb image

# Fuzz targets (package:Target) and how long `make fuzz` runs each one.
FUZZ_TARGETS := ./config:FuzzParse ./config:FuzzParsers ./filter:FuzzFilter ./nfq:FuzzParseMessages ./sink:FuzzPacket ./collect:FuzzDecode ./gso:FuzzSplit
# A count of executions, not a duration: with -fuzztime=10s Go's fuzzing
# coordinator can end with "context deadline exceeded" when a worker is
# still running at the deadline (golang/go#51484; it failed FuzzParseMessages
# once on a loaded machine), a count has no deadline to race.
FUZZTIME ?= 50000x

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/nfclone

deps:
	bash scripts/deps.sh

# Every test: formatting, vet, staticcheck, unit tests with the race
# detector, and the end-to-end tests (root; they fail instead of skipping
# when NFCLONE_E2E=1, as in CI).
# The lab packages (test/...) run one at a time: the bench's floods and
# the end-to-end tests' line-rate transfers must not share the two CPUs.
test: deps lint build
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test/)
	$(MAKE) --no-print-directory allocs
	$(GO) test -race -count=1 -p 1 -timeout 40m ./test/...
	$(MAKE) --no-print-directory fuzz

# The allocation tests (0 allocations per packet on the hot paths) skip
# under -race, which instruments allocations: they run here without it.
ALLOC_TESTS := Allocs|NoAlloc
allocs:
	@out=$$($(GO) test -count=1 -run '$(ALLOC_TESTS)' -v ./nfq ./sink ./gso ./internal/mmsg 2>&1); st=$$?; \
	  echo "$$out" | grep -E '^(--- |ok|FAIL)|allocat'; exit $$st

# A short run of every fuzz target (seed corpora in each package's testdata/fuzz).
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "fuzz $$name ($$pkg, $(FUZZTIME))"; \
	  log=$$(mktemp); \
	  if ! $(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg >$$log 2>&1; then \
	    cat $$log; rm -f $$log; exit 1; fi; \
	  tail -1 $$log; rm -f $$log; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

# Unit tests only (no root needed).
unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test/)

e2e: build
	NFCLONE_E2E=1 $(GO) test -count=1 -timeout 40m -v ./test/...

demo: deps build
	bash scripts/demo.sh

bench: deps build
	bash scripts/bench.sh

lab-clean:
	bash scripts/lab.sh down-all

# Packaging (packaging/README.md): the config's JSON Schema (checked in;
# a test fails when it is stale), man pages, the Debian package, the OCI image.
schema:
	$(GO) run ./cmd/nfclone schema > packaging/nfclone.schema.json

# One man page per command (section 8), rendered by `man -l bin/man/nfclone.8`.
man: build
	rm -rf bin/man && $(BIN) man bin/man

# bin/nfclone_<version>_amd64.deb (dpkg-deb; installs nothing, starts nothing).
deb:
	GO=$(GO) bash scripts/deb.sh bin

# bin/nfclone-image.tar: OCI archive (no container daemon): the static
# binary as /nfclone on an empty base. skopeo copy oci-archive:bin/nfclone-image.tar docker://REGISTRY/nfclone:TAG
image:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o bin/nfclone-static ./cmd/nfclone
	$(GO) run ./packaging/image -binary bin/nfclone-static -version $(VERSION) \
	  -revision "$$(git rev-parse HEAD 2>/dev/null)" \
	  -created "$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || echo 0)}" -out bin/nfclone-image.tar

clean:
	rm -rf bin
