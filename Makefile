# The two commands: `make demo` runs a wasm image through wasmpod end to end,
# `make test` sets up, builds, lints and runs every test (tests that need root and a
# private containerd run too; run as root).
export CARGO_TARGET_DIR ?= $(HOME)/.cache/wasmpod/target

.PHONY: setup build demo lint check test bench

setup:
	scripts/setup.sh

build:
	# The whole workspace at once: the same feature set `cargo test --workspace` uses, so the
	# dependencies are compiled once.
	cargo build --workspace

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

test: setup build lint
	cargo test --workspace
	# The shim's tests that need root (ignored in a plain `cargo test`: `make check`).
	cargo test -p containerd-shim-wasmpod -- --ignored --skip seccomp_cost

# End-to-end on a kind cluster (needs Docker, kind, kubectl, helm; exits 2 without them).
# Not part of `make test` / .ci/run.
.PHONY: test-kind
test-kind:
	test/kind/run.sh

# The performance figures of issue 4 (table + JSON in target/bench/); needs root.
bench: setup
	bench/bench.sh
