"""The unit layer: tiny random models, pure functions, explanations' properties and hand-computed cases, images and
preprocessing, the CLI on tiny models, docs links, packaging."""
