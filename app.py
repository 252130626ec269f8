"""SelfJudge Studio: start the web app (python app.py --help), or let Hugging Face Spaces import `demo`.

    python app.py                       # embedded model, data/ , http://127.0.0.1:7860
    python app.py --model llava-hf/llava-1.5-7b-hf --4bit --port 7861
"""

from __future__ import annotations

import sys

from core.engine.loading import get_model
from selfjudge_ui import build_app, launch_options
from selfjudge_ui.gpu import gpu_available
from selfjudge_ui.settings import parser, settings_from_args

# A fine-tune worker (multiprocessing spawn) re-imports this file as __mp_main__: it needs no UI.
if __name__ != "__mp_main__":
    settings = settings_from_args(parser().parse_args(sys.argv[1:] if __name__ == "__main__" else []))
    if gpu_available():
        get_model(settings.model)  # ZeroGPU: the model must be on CUDA before the first request
    demo = build_app(settings)

if __name__ == "__main__":
    demo.launch(**launch_options(settings))
