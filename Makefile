# sparsesplat: `make demo` runs the main job on the bundled example, `make test` runs the test suite.
# Both create .venv on first use and install everything (torch first, so nothing pulls another build).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXAMPLE ?= examples/synthetic_forward
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?= -n auto

.PHONY: demo test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# CPU wheel 2.13.0 without a GPU; a CUDA build where nvidia-smi works. Installed first so that
	@# no dependency pulls a different torch.
	if nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q torch; else $(BIN)/pip install -q torch==2.13.0; fi
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: venv
	$(BIN)/sparsesplat reconstruct $(EXAMPLE) -o $(DEMO_OUT) --protocol llff6 --overwrite

test: venv
	$(BIN)/pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .torch_extensions .pytest_cache
