"""The Gradio app (the only part of vtdemo that imports Gradio), one module per tab.

- `app`: `create_app(config)` assembles the tabs into one `gr.Blocks`; `launch_options(config)`;
- `classify`, `detect` (+ `matching`, its set-matching panel), `webcam`, `howto`: each tab owns its components, its
  cached state, its handlers and its view helpers;
- `common`: what the tabs share (`Services`: settings, device, model loading, the run index; messages, exports);
- `components`: small variants of Gradio components (the one door for images, validated sliders, the box view);
- `config`: settings from flags and environment variables; `sessions`: which session holds which cached run.
"""
