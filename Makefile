# Developer entry points. `make test` and `make demo` are the README's two commands.
.PHONY: test demo deps cluster-up cluster-down cluster-status image load-image dev-env lint unit bench clean

test:  ## set up everything, then run every tier: unit, chart, cluster, e2e
	ci/test-all

demo:  ## run examples/demo/demo.ipynb as a Kubernetes Job (brings up the local cluster if none is configured)
	ci/demo

deps:
	ci/deps

cluster-up:
	ci/cluster/up

cluster-down:
	ci/cluster/down

cluster-status:
	ci/cluster/status

IMAGES = executor gateway user hub proxy

image:  ## build the images into docker-archive tarballs (prints their paths)
	for target in $(IMAGES); do ci/image/build $$target | tail -n 1 || exit 1; done

load-image:  ## import the images into the local cluster's containerd
	for target in $(IMAGES); do ci/cluster/load-image "$$(ci/image/build $$target | tail -n 1)" || exit 1; done

# On a laptop with kind and Docker, `make dev-env` may use kind instead of ci/cluster.
dev-env:
	@if command -v kind >/dev/null && docker info >/dev/null 2>&1; then \
	  kind get clusters | grep -qx jsk8s || kind create cluster --name jsk8s; \
	  docker build -t localhost/jupyter-scheduler-k8s-executor:$$(python3 -c 'import tomllib;print(tomllib.load(open("image/executor/pyproject.toml","rb"))["project"]["version"])') image; \
	  kind load docker-image --name jsk8s localhost/jupyter-scheduler-k8s-executor:$$(python3 -c 'import tomllib;print(tomllib.load(open("image/executor/pyproject.toml","rb"))["project"]["version"])'); \
	else ci/cluster/up && $(MAKE) load-image; fi

lint:
	ci/chart/lint

unit:  ## the fast tier only (no cluster)
	.venv/bin/pytest -q tests/unit tests/chart

bench:
	bench/overhead

clean:
	ci/cluster/down
	rm -rf out
