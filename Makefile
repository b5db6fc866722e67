# The project's commands: `make demo` and `make test` do all the set-up from nothing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
VIDEO  ?= ../shared/data/video/dancer_room.mp4

.PHONY: setup demo test bench addon clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# mediapipe pulls opencv-contrib-python, which writes the same cv2/ package as the headless
	# wheel: reinstall the headless one last so that one known, display-free cv2 wins.
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps opencv-python-headless==4.11.0.86
	$(BIN)/python -c "import cv2, numpy, mediapipe, bpy, torch, zmq, av, openvino; assert cv2.__version__ == '4.11.0', cv2.__version__; print('set-up ok: cv2', cv2.__version__, '| numpy', numpy.__version__, '| torch', torch.__version__, '| bpy', bpy.app.version_string)"
	touch $(STAMP)

demo: setup
	$(BIN)/pix2dance demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

addon: setup
	$(BIN)/pix2dance addon --out dist

clean:
	rm -rf $(VENV) dist demo-output .pytest_cache
