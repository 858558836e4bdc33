# flx — every target installs what it needs into .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1

# Detection tables (shapes, tiny RetinaNet) after the learning-curve check that sets their length, then the
# classification proxy. catsdogs (real photos) and catsdogs_cifar (CIFAR-10, after `flx download cifar10`) have
# their own targets and stay out of `ablations`. bimodal: the curves of the v3 map's split alpha-CE runs (128 px).
# Each target re-indexes results/README.md (the results page; nothing copies it).
ABLATIONS := curves curves_map bimodal stability table1a table1b table1c table1d prior poly proxy
# Every results/ folder a sweep target writes.
TABLES := $(ABLATIONS) catsdogs catsdogs_cifar
# The tables results/README.md indexes, in its order (regimes: the map's cells, from results/regimes/map.md).
INDEXED := $(ABLATIONS) regimes catsdogs catsdogs_cifar
# Real data for the catsdogs ablation (read in place); override with FLX_DATA_DIR=/path/to/data.
export FLX_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: install test test-fast docs demo lint bench gpu-check clean ablations regimes recheck more_seeds $(TABLES)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole suite, its 15 slowest tests listed at the end (what CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest --durations=15

# The tests that spawn no process and need no torch.compile or Ray (markers in pyproject.toml): under 2 minutes.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not subprocess and not compile and not ray"

# The docs site (mkdocs-material, strict: a broken link or page fails), after the CLI reference is regenerated.
docs: $(STAMP)
	$(BIN)/python -m flx.cli.reference docs/cli.md
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# A short real run (about 30 s on 2 cores): why focal loss, then CE against FL (15 epochs, 5 paired seeds) on a
# small 1:100 task, and the verdict on a claim declared in experiments/demo.toml before the runs.
demo: $(STAMP)
	$(BIN)/flx anatomy
	$(BIN)/flx sweep experiments/demo.toml --out runs/demo
	$(BIN)/flx report runs/demo --no-plots
	cat runs/demo/table.md
	@echo "What it shows: the claim row is the verdict on 'FL beats CE', declared in experiments/demo.toml before"
	@echo "the runs and judged on 5 paired seeds (replicated / contradicted / inconclusive: where the 95% interval of"
	@echo "the paired test-AP difference lies). A small synthetic 1:100 task, not the paper's dense-detection regime."

lint: $(STAMP)
	$(BIN)/ruff check flx tests
	$(BIN)/ruff format --check flx tests
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/flx bench losses
	$(BIN)/flx bench detection

# On a machine with a CUDA GPU, within GPU_CHECK_BUDGET seconds (default 420): flx bench detection and flx bench
# losses there, the CUDA tests, a short shapes sweep with 3 runs per GPU; writes gpu-check/report.txt
# (GPU_CHECK_OUT=DIR to move it).
gpu-check: $(STAMP)
	BIN=$(BIN) bash .ci/gpu-check

# The results page: every indexed folder that holds runs (runs.csv) or a map of flx compare cells (map.md).
INDEX := $(BIN)/flx report --no-plots --index results/README.md \
         $$(for d in $(INDEXED); do test -f results/$$d/runs.csv -o -f results/$$d/map.md && echo results/$$d; done)

# Each ablation: train the spec's runs (skipping those already in results/NAME/runs.sqlite), then write
# results/NAME/{runs.csv,table.md,table.csv,*.png}. On a fresh clone there is no store: everything is retrained.
$(TABLES): $(STAMP)
	$(BIN)/flx sweep experiments/$@.toml --out results/$@
	$(BIN)/flx report results/$@
	$(INDEX)

ablations: $(ABLATIONS)

# The regime map, v4 (issue 31): one `flx compare` per cell, alpha-CE, FL and OHEM each tuned on 8 trials with the
# paper's Table 1a/1b/1d points queued first, the best of each on seeds 1-5, each on its own training images.
# An L: clutter (hard negatives: 0, 8, 32 per 64 x 64 px) at 64 px, and canvas (imbalance: 64, 96, 128 px) at
# clutter 8. 2,400 steps: at 1,200 (the 64 px tables' length) the curves of the cluttered and larger canvases still
# climb (make curves_map: +0.03 to +0.07 AP at 2,400, focal loss gaining more). OHEM's loss is divided by the
# object anchors as FL's is (ohem_norm=objects), so that all families train on one learning rate at one gradient
# scale. Resumable (each cell its own folder); results/regimes/map.md and regime_map.png.
# `make recheck` then re-runs every settled verdict on fresh seeds 6-10, each family fixed to its chosen setting;
# `make more_seeds` every inconclusive one on ten fresh seeds, 11-20, judged on them alone.
REGIME_CELLS := image_size=64,clutter=32 image_size=64,clutter=8 image_size=64,clutter=0 \
                image_size=96,clutter=8 image_size=128,clutter=8
REGIMES := $(BIN)/flx compare shapes --families balanced_ce,focal,ohem --budget 8 --seeds 5 \
           --set steps=2400 --set ohem_norm=objects $(foreach c,$(REGIME_CELLS),--cell $(c)) --out results/regimes
# On a fresh clone each committed cell's store is rebuilt from its runs.csv first, so nothing trains twice (on another
# machine too: restored runs of generated data are reused where its draw differs there, flx.sweep.restored).
RESTORE := for d in results/regimes/*/ results/regimes/*/recheck/ results/regimes/*/more_seeds/; do test -f $$d/runs.csv && \
           ! test -f $$d/runs.sqlite && $(BIN)/flx runs restore $$d; done; true
regimes: $(STAMP)
	$(RESTORE)
	$(REGIMES)
	$(INDEX)

recheck: $(STAMP)
	$(RESTORE)
	$(REGIMES) --recheck 6-10
	$(INDEX)

more_seeds: $(STAMP)
	$(RESTORE)
	$(REGIMES) --more-seeds 11-20
	$(INDEX)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
