"""`python -m vtdemo soak`: drive a running app like a day of real traffic and report how it held up.

N visitors, each a `gradio_client.Client` session of its own in a thread, do a seeded mix of what people do on the
page (classify with ViT / Swin on the example photos, explanation and method changes, detections, DETR threshold
changes, comparisons, model switches, webcam frames, bad inputs), with think time between actions. Every request is
recorded (endpoint, start, latency, outcome: ok / busy / failed); a sampler reads the server's memory, open files and
temporary-file bytes every few seconds. The report: two CSVs, a PNG and a summary judged against the targets of
issue 21 (docs/deployment.md, "Soak test").

Modules: `plan.py` (the mix, each endpoint's arguments), `outcome.py` (an answer -> ok / busy / failed),
`visitor.py` (one visitor's thread), `server.py` (the server's process: RSS, open files, temporary files),
`report.py` (CSV, summary, targets), `plot.py` (the PNG, drawn with PIL), `command.py` (the subcommand).
The soak talks to the app over HTTP only: it imports nothing of `vtdemo.ui`.
"""
