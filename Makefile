# The two commands: `make demo` runs a wasm image through wasmpod end to end,
# `make test` sets up, builds, lints and runs every test (tests that need root and a
# private containerd run too; run as root).
export CARGO_TARGET_DIR ?= $(HOME)/.cache/wasmpod/target

.PHONY: setup build static test-static demo lint check test bench bench-static release

setup:
	scripts/setup.sh

build:
	# The whole workspace at once: the same feature set `cargo test --workspace` uses, so the
	# dependencies are compiled once.
	cargo build --workspace

# Static (musl) shim and installer for x86_64 and aarch64 (scripts/build-static.sh: zig,
# cargo-zigbuild, libseccomp from Debian's source, all cached under ~/.cache/wasmpod). Dev
# builds, part of `make test`: x86_64 in the dev profile (the ctr, CRI and installer suites
# run against it), aarch64 with its dependencies at opt-level 0 (it only runs under qemu).
# Cold, about 25 CPU-minutes for both (once: the target dir is cached); after a change, ~1 min.
STATIC_SHIM = $(CARGO_TARGET_DIR)/x86_64-unknown-linux-musl/debug/containerd-shim-wasmpod-v1
static:
	scripts/build-static.sh build x86_64-unknown-linux-musl >/dev/null
	scripts/build-static.sh build aarch64-unknown-linux-musl dev-o0 >/dev/null

# The static builds' own checks (ELF inspection; --version and --self-check natively and
# under qemu-aarch64) and the ctr suite against the x86_64 static shim: the static part of
# `make test` alone.
test-static: static
	cargo test -p wasmpod-test --test static_build -- --include-ignored
	WASMPOD_SHIM=$(STATIC_SHIM) cargo test -p wasmpod-test --test ctr_run

# Release binaries of both architectures with .sha256 in dist/<arch>/, what
# installer/Dockerfile (multi-arch) takes.
release:
	scripts/release.sh

demo:
	scripts/demo.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items

# The quick loop: format, lints, the shim's and runtime-core's unit tests and the shim's
# launcher tests that need no root. No root, no apt, no containerd.
check:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test -p containerd-shim-wasmpod -p wasmpod-runtime-core

test: setup build static lint
	# The static builds' checks (ignored in a plain `cargo test`, which has no static build).
	cargo test -p wasmpod-test --test static_build -- --ignored
	# runtime-core's unit tests built for aarch64 and run under qemu (all its suites: `make
	# test-aarch64`, about 10 min more).
	scripts/build-static.sh test-runtime-core aarch64-unknown-linux-musl lib
	# The containerd suites (ctr, CRI, installer) run against the x86_64 static shim, the
	# build releases ship (WASMPOD_SHIM); the shim's own unit tests are the glibc build's.
	WASMPOD_SHIM=$(STATIC_SHIM) cargo test --workspace
	# The shim's tests that need root (ignored in a plain `cargo test`: `make check`).
	cargo test -p containerd-shim-wasmpod -- --ignored --skip seccomp_cost

# Every runtime-core suite (unit, guests, wasi:http) built for aarch64 and run under
# qemu-aarch64-static; `make test` runs the unit tests only.
.PHONY: test-aarch64
test-aarch64: setup
	scripts/build-static.sh test-runtime-core aarch64-unknown-linux-musl all

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
