# Every target sets up its own virtual environment, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint samples xtensa-assembler fuzz reliability clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP) xtensa-assembler
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) tests/bench/run_all.py

lint: $(STAMP)
	$(PY) -m pyflakes esp_ota_emu tests examples firmware_samples/build.py

# The samples' assembler (Debian's binutils-xtensa-lx106). Installed when missing and apt-get is there;
# a failed install is not an error: only the samples' reproducibility test needs it, and it then skips.
XTENSA_AS := xtensa-lx106-elf-as
xtensa-assembler:
	@command -v $(XTENSA_AS) >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binutils-xtensa-lx106; } >/dev/null 2>&1 || \
	  echo "note: could not install binutils-xtensa-lx106; firmware samples cannot be rebuilt"

samples: $(STAMP) xtensa-assembler
	$(PY) firmware_samples/build.py

# The long fuzzing run (outside `make test`): properties with 5000 examples, torn writes over 20 seeds.
fuzz: $(STAMP)
	$(PY) tests/fuzz/run_fuzz.py

# Power-cut and network-fault tables (the README shows the latest ones).
reliability: $(STAMP)
	$(PY) tests/reliability.py

clean:
	rm -rf $(VENV) build *.egg-info
