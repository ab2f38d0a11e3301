"""The Gradio app (the only part of vtdemo that imports Gradio).

- `config`: settings from flags and environment variables (no Gradio);
- `views`, `webcam`, `howto`: what is shown, computed from cached runs (no Gradio);
- `components`: `SafeImage` and `BoxImage`, two small variants of Gradio components;
- `handlers`: thin event handlers and the per-session caches;
- `layout`: the Blocks tree, `build_app(config)` and `launch_options(config)`.
"""
