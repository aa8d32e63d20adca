# The two commands: `make demo` runs a wasm image through wasmpod end to end,
# `make test` sets up, builds, lints and runs every test (tests that need root and a
# private containerd run too; run as root).
export CARGO_TARGET_DIR ?= $(HOME)/.cache/wasmpod/target

.PHONY: setup build demo lint test

setup:
	scripts/setup.sh

build:
	cargo build -p containerd-shim-wasmpod

demo:
	scripts/demo.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test: setup build lint
	cargo test --workspace
