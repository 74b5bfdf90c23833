# visionlab: `make` sets up .venv and runs the main job; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared

.PHONY: all setup demo test test-fast bench-camvid clean

all: setup demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# constraints.txt pins every package (torch==2.14.1 / torchvision==0.29.1 from the local mirror)
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -c constraints.txt -e ".[test,tensorboard]"
	touch $@

setup: $(VENV)/.installed

# main job on the built-in synthetic driving scenes: FPN on the offline ImageNet EfficientNet-Lite0 encoder,
# 8 epochs at 192x256 (3 min on 2 cores): every category above zero; evaluate, plot, predict
DEMO := model=fpn_efficientnet_lite0 pretrained=imagenet 'imgsz=[192,256]' epochs=8
demo: setup
	$(BIN)/visionlab segment train name=demo exist_ok=true $(DEMO)
	$(BIN)/visionlab segment predict model=runs/segment/demo source=docs/images/example_scene.png name=demo_predict exist_ok=true

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not ddp"

bench-camvid: setup
	$(BIN)/python benchmarks/camvid_segment.py --shared $(SHARED)

clean:
	rm -rf $(VENV) runs .pytest_cache
