# The two commands: `make demo` runs a wasm image through wasmpod end to end,
# `make test` sets up, builds, lints and runs every test (tests that need root and a
# private containerd run too; run as root).
export CARGO_TARGET_DIR ?= $(HOME)/.cache/wasmpod/target

.PHONY: setup build static demo lint test bench bench-static release

# The suites run against the x86_64 static (musl) build of the shim, what nodes get;
# dev profile (dependencies optimised, see Cargo.toml), as the tests themselves.
STATIC_SHIM = $(CARGO_TARGET_DIR)/x86_64-unknown-linux-musl/debug/containerd-shim-wasmpod-v1

setup:
	scripts/setup.sh

build:
	# The whole workspace at once: the same feature set `cargo test --workspace` uses, so the
	# dependencies are compiled once.
	cargo build --workspace

# Static (musl) shim and installer for x86_64 and aarch64 (scripts/build-static.sh); the
# tests check they are static and run them (test/tests/static_build.rs).
static:
	scripts/build-static.sh build x86_64-unknown-linux-musl
	scripts/build-static.sh build aarch64-unknown-linux-musl

# Release binaries of both architectures with .sha256 in dist/<arch>/, what
# installer/Dockerfile (multi-arch) takes.
release:
	scripts/release.sh

demo:
	scripts/demo.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test: setup build static lint
	WASMPOD_SHIM=$(STATIC_SHIM) cargo test --workspace

# End-to-end on a kind cluster (needs Docker, kind, kubectl, helm; exits 2 without them).
# Not part of `make test` / .ci/run.
.PHONY: test-kind
test-kind:
	scripts/release.sh $$(dpkg --print-architecture)
	test/kind/run.sh

# The performance figures of issue 4 (table + JSON in target/bench/); needs root.
bench: setup
	bench/bench.sh

# The static (musl) shim against the glibc one, alternating in one run (bench/static.sh).
bench-static: setup
	bench/static.sh
