# Shortcuts; each target is one script under bin/.
.PHONY: deps run test unit lint down

deps:
	bin/install-deps

run:
	bin/demo

test:
	bin/test

unit:
	.venv/bin/python -m pytest -q tests/unit

lint:
	.venv/bin/ruff check .

down:
	.venv/bin/python bin/local-datacenter down
