# The README's test command is `make test`; .ci/run calls it on a clean clone.
GO ?= go
PKGS := ./...

.PHONY: test fmt-check vet unit lab fuzz-smoke build image image-test compose-test bench

test: fmt-check vet unit

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# Unit and simulation tests print one line per package as each finishes.
# The netns NAT lab (as root with the kernel features) runs last, in -v mode
# so its output streams; the filter keeps its one "natlab:" line per
# scenario, skip reasons, failures with their logs, and the summary
# (.ci/lab-progress.awk).
LAB := ./integration/natlab
unit:
	$(GO) test -race -count=1 -timeout 15m $$($(GO) list $(PKGS) | grep -v '/integration/natlab$$')
	bash -o pipefail -c '$(GO) test -race -count=1 -timeout 15m -v $(LAB) 2>&1 | awk -f .ci/lab-progress.awk'

# Static binaries in bin/ (what the image and the systemd units use).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/...

# The production image (deploy/Dockerfile, FROM scratch); image-test also runs
# it. Both print one "skip:" line when no docker engine answers.
image: build
	./deploy/image.sh

image-test: build
	./deploy/image.sh test

compose-test:
	./integration/compose/compose-test.sh

bench:
	$(GO) run ./integration/cmd/dhtsim -n 300 -transport udp
