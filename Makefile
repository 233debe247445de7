# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# colcon in a venv of its own: colcon-core pins setuptools below the test venv's
COLCON_VENV := .venv-colcon
COLCON_STAMP := $(COLCON_VENV)/.installed

MM_VENV := .venv-mm
MM_TESTS := tests/test_train_mm_plugin.py
# pytest-xdist workers for the main run: 2 (the 2-core machines the suite is timed on; most tests
# wait on subprocesses, ROS tools and DDS for part of their time, so two workers fill two cores).
# Each worker has its own DDS domain ids and one OpenMP thread (tests/conftest.py).
TEST_WORKERS ?= 2

.PHONY: test demo venv mm-venv viz-debs foxglove-screenshot clean

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	$(VENV)/bin/pip check
	touch $(STAMP)

$(COLCON_STAMP): requirements-colcon.txt
	$(PYTHON) -m venv $(COLCON_VENV)
	$(COLCON_VENV)/bin/pip install -q -r requirements-colcon.txt
	$(COLCON_VENV)/bin/pip check
	touch $(COLCON_VENV)/COLCON_IGNORE $(COLCON_STAMP)

venv: $(STAMP) $(COLCON_STAMP)

# The optional OpenMMLab stack lives in its own venv (requirements-mm.txt), rebuilt when that file's
# hash changes; it sees the main venv's packages through a .pth file, so the main venv stays untouched.
mm-venv: $(STAMP)
	@h=$$(sha256sum requirements-mm.txt | cut -c1-16); \
	if [ "$$(cat $(MM_VENV)/.installed 2>/dev/null)" != "$$h" ]; then \
	  echo "building $(MM_VENV) (requirements-mm.txt $$h)"; rm -rf $(MM_VENV) && $(PY) -m venv $(MM_VENV) && \
	  $(PY) -c "import sysconfig; print(f'import site; site.addsitedir({sysconfig.get_paths()[\"purelib\"]!r})')" \
	    > "$$($(MM_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_priorocc_main_venv.pth" && \
	  $(MM_VENV)/bin/pip install -q --no-deps -r requirements-mm.txt && touch $(MM_VENV)/COLCON_IGNORE && \
	  echo "$$h" > $(MM_VENV)/.installed; \
	fi

# Both runs always run (a failed mm-venv build shows as a failed second run); the last line is the
# total of both, the exit code non-zero if either failed.
# The Debian run-time packages of ../shared/ros2's rosbag2 / rviz2 tree (activate-viz.sh names
# them): installed once as root with apt-get; elsewhere one line why not (those tests then skip,
# and fail in CI).
viz-debs:
	@bash .ci/viz_debs.sh

test: $(STAMP) $(COLCON_STAMP)
	-@$(MAKE) --no-print-directory mm-venv
	@$(MAKE) --no-print-directory viz-debs
	$(PY) .ci/test_all.py -- $(PY) -m pytest -q -n $(TEST_WORKERS) tests --ignore=$(MM_TESTS) \
	                      -- env OMP_NUM_THREADS=1 $(MM_VENV)/bin/python -m pytest -q $(MM_TESTS)

# The README's Foxglove picture (docs/img/foxglove_demo.png): Debian's Chromium (apt, ~400 MB)
# and Foxglove Studio 1.48 from npm (docs/foxglove_screenshot); not part of `make test`.
foxglove-screenshot: $(STAMP)
	@command -v npm >/dev/null && command -v chromium >/dev/null || \
	  (apt-get update -q && apt-get install -y -q --no-install-recommends nodejs npm chromium)
	cd docs/foxglove_screenshot && npm ci --no-audit --no-fund
	PYTHONPATH=. $(PY) docs/foxglove_screenshot/make.py

demo: $(STAMP)
	$(PY) training/demo.py --checkpoint models/demo --out demo_out

clean:
	rm -rf $(VENV) $(MM_VENV) $(COLCON_VENV) demo_out
