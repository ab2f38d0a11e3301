"""vtdemo's web app: `python app.py [--vit-model M] [--swin-model M] [--detr-model M] [--host H] [--port P]`.

The same file runs as a Hugging Face Space. Settings and their environment variables: `python app.py --help` and
`vtdemo/ui/config.py`. No model is loaded at start-up; each loads on first use, or on a Hugging Face Space (and with
`--warm-up`) in the background once the server listens.
"""

from vtdemo.ui.app import create_app
from vtdemo.ui.config import from_args

if __name__ == "__main__":
    create_app(from_args()).launch()
