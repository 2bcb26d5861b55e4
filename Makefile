# Shoal developer commands. `make help` lists them.
#
# Builds go to a folder outside the clone so a fresh clone (and CI) reuses
# the ~20-minute RocksDB build.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/shoal-target
BIN := $(CARGO_TARGET_DIR)/debug
# Developer builds carry failpoints (docs/failpoints.md): the fault tests need
# them, and one feature set for every target avoids rebuilding kv-server when
# switching between `make run` and `make test`. Release images leave them out.
FEATURES := --features kv-server/failpoints,shard-manager/failpoints

.PHONY: help deps build run test lint verify doc bench bench-txn fast-ack-loss failover repair move-cost image jepsen clean-data

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## Install system packages the build needs (libclang-dev for RocksDB's bindgen)
	@./scripts/install-deps.sh

build: deps ## Build the kv-server, shard-manager and shoal binaries
	cargo build --workspace --bins $(FEATURES)

run: build ## Start a local 3-node playground cluster (Ctrl-C stops it)
	$(BIN)/shoal playground --data-dir shoal-data

test: deps ## Run every test (unit, storage conformance, process clusters)
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace $(FEATURES) --no-fail-fast; \
	else \
		cargo test --workspace $(FEATURES) --no-fail-fast; \
	fi

lint: deps ## fmt check and clippy with warnings denied
	cargo fmt --all --check
	cargo clippy --workspace --all-targets $(FEATURES) -- -D warnings

doc: deps ## Build the docs with warnings denied
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps $(FEATURES)

verify: lint test doc ## Everything CI checks (read-only)

bench: build ## Load generator against a fresh local 3-node cluster: quorum/fast-ack put, strong/bounded get at 1 and 64 clients
	$(BIN)/shoal bench --local --seconds 10

bench-txn: build ## Transactions on a fresh local 3-node cluster: commit (10 reads, 2 writes) vs put at 1 and 64 clients; bank abort rate at 1, 8, 64 clients
	$(BIN)/shoal bench --txn --seconds 10

fast-ack-loss: build ## Acknowledged writes lost to kill -9 of a primary: fast-ack vs quorum (5 kills)
	$(BIN)/shoal bench --fast-ack-kills 5

failover: build ## Kill -9 the node of a primary 20 times on a fresh local cluster; print failover times
	$(BIN)/shoal bench --failover-kills 20

repair: build ## Kill -9 a loaded node 5 times on a fresh 5-node cluster; print time to full replication
	$(BIN)/shoal bench --repair-kills 5 --keys 20000 --value-bytes 1024

move-cost: build ## Move a 10 MiB μshard 10 times under writes; print time to activation, write pauses, others' throughput
	$(BIN)/shoal bench --move-rounds 10 --move-mb 10

image: build ## Build the shoal:dev image (FROM scratch) from the binaries built here
	./scripts/image-rootfs.sh $(BIN) docker/rootfs
	docker build -t shoal:dev -f docker/Dockerfile docker

# `make jepsen` options; e.g. make jepsen NEMESIS=partition DURATION=300 SEED=7
WORKLOAD ?= register
NEMESIS ?= kill,partition
DURATION ?= 120
SEED ?= 1
CLUSTER ?= local
jepsen: build ## Fault-injection run with a verdict (WORKLOAD, NEMESIS, DURATION, SEED, CLUSTER=local|compose)
	$(BIN)/jepsen --cluster $(CLUSTER) --workload $(WORKLOAD) --nemesis $(NEMESIS) --duration $(DURATION) --seed $(SEED) --out jepsen-out

clean-data: ## Remove the playground's data folder
	rm -rf shoal-data
