"""Runs an exported ONNX model in ONNX Runtime on the MNIST test set and compares it with
backprop's own predictions.

    python onnx_check.py MODEL.onnx OURS.safetensors DATA_DIR

OURS.safetensors holds `probabilities` (N, classes), written by backprop for the first N test
images. Prints one line, `mismatches M max_diff D images N`, after checking the model with
`onnx.checker` (shape inference included: our layer sizes must be ONNX's) and its metadata.
"""

import gzip
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime
from safetensors.numpy import load_file


def test_images(data_dir):
    """The test images as (N, 1, H, W) float32 in [0, 1], as backprop normalizes them."""
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"):
        path = pathlib.Path(data_dir) / name
        if path.exists():
            raw = path.read_bytes()
            if name.endswith(".gz"):
                raw = gzip.decompress(raw)
            n, rows, cols = np.frombuffer(raw[4:16], dtype=">u4")
            pixels = np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 1, rows, cols)
            return pixels.astype(np.float32) / 255.0
    sys.exit(f"{data_dir}: no t10k-images-idx3-ubyte[.gz]")


def main(model_path, ours_path, data_dir):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    info = json.loads(meta["backprop.model"])
    ours = load_file(ours_path)["probabilities"]
    images = test_images(data_dir)[: len(ours)]
    assert images.shape[1:] == tuple(info["input"]), (images.shape, info["input"])

    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == ["logits", "probabilities"], names
    theirs = np.concatenate(
        [
            session.run(["probabilities"], {"input": images[i : i + 500]})[0]
            for i in range(0, len(images), 500)
        ]
    )
    assert theirs.shape == ours.shape, (theirs.shape, ours.shape)
    mismatches = int((theirs.argmax(1) != ours.argmax(1)).sum())
    max_diff = float(np.abs(theirs - ours).max())
    print(f"mismatches {mismatches} max_diff {max_diff:.3e} images {len(ours)}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
