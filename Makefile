# The two commands a newcomer needs; each installs what it needs first.
#   make demo   the whole pipeline on the embedded sample, offline, then its metrics
#   make test   the test suite
PYTHON ?= python3
UV := $(PYTHON) -m uv
MIRROR_PORT := 8765

.PHONY: demo test install

install:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv>=0.5"
	$(UV) sync --locked

demo: install
	$(UV) run --locked python -m pipeline.mirror --root sample/media --port $(MIRROR_PORT) -- dvc repro
	$(UV) run --locked dvc metrics show

test: install
	$(UV) run --locked pytest
