# Reads a two-layer model saved by `backprop train --save` with Python's safetensors and NumPy
# only, runs its forward pass (the book's TwoLayerNet.predict) on the first N test images, and
# prints, one line per image, the predicted class and the ten softmax probabilities.
#     python3 tests/python/forward_pass.py MODEL.safetensors DATA_DIR N
import gzip, json, os, sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

path, data, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with safe_open(path, framework="numpy") as f:
    model = json.loads(f.metadata()["backprop.model"])
assert model["layers"].split("\n")[1] == "relu", model
w = load_file(path)
W1, b1, W2, b2 = w["W1"], w["b1"], w["W2"], w["b2"]
assert W1.dtype == np.float32 and W1.shape[0] == 784, (W1.dtype, W1.shape)


def images(name):
    for p in (os.path.join(data, name), os.path.join(data, name + ".gz")):
        if os.path.exists(p):
            raw = (gzip.open if p.endswith(".gz") else open)(p, "rb").read()
            return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784)
    raise FileNotFoundError(name)


x = images("t10k-images-idx3-ubyte")[:n].astype(np.float32) / np.float32(255)
h = np.maximum(x @ W1 + b1, 0)
y = h @ W2 + b2
p = np.exp(y - y.max(axis=1, keepdims=True))
p /= p.sum(axis=1, keepdims=True)
for row in p:
    print(int(row.argmax()), " ".join(f"{v:.7f}" for v in row))
