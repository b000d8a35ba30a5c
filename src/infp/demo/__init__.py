"""The web demo (`infp demo`): Gradio, on top of `infp.pipeline` (needs the `demo` extra: gradio)."""
