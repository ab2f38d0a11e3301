"""The app layer: the Gradio app launched in the test process (or its Blocks and handlers), driven through
gradio_client and raw HTTP, without a browser."""
