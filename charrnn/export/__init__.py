"""`charrnn export`: a trained model taken where torch and charrnn are not.

- charrnn/onnx_step.py: the one-character step as an ONNX graph (charrnn/onnx_runtime.py samples from it);
- charrnn/model_folder.py: a Hugging Face-style folder (safetensors, config.json, tokenizer.json, a model
  card), which `Sampler.load` reads back;
- html.py: one self-contained page that samples in the browser (charrnn/web/);
- about.py: what an export says about the run behind it;
- run.py: the command itself, from a run folder to the files.

The libraries these need are an optional extra (`pip install 'charrnn-toolkit[export]'`, extras.py).
Nothing here is imported by `import charrnn`.
"""

FORMATS = ("onnx", "hf", "html")
