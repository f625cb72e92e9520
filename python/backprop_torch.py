"""backprop's models in PyTorch, and back: copy this file beside your own script.

    import backprop_torch as bt
    model, info = bt.load("model.safetensors")      # an nn.Sequential (eval mode) and its description
    ...                                             # train, fine-tune, DDP, export: PyTorch's tools
    bt.save(model, info, "continued.safetensors")   # `backprop eval` and `predict` read it

From the command line (MNIST as IDX files, gzip or raw, e.g. backprop's data/mnist):

    python backprop_torch.py eval MODEL DATA_DIR
    python backprop_torch.py probabilities MODEL DATA_DIR OUT.safetensors
    python backprop_torch.py train MODEL DATA_DIR OUT [--epochs 1] [--lr 0.001] [--batch-size 100] [--seed 0]
    python backprop_torch.py roundtrip MODEL OUT     (NumPy only: through PyTorch's layouts and back)

A backprop model file is safetensors: the weights (F32) and, in the metadata under
"backprop.model", {"input": [C, H, W], "classes": K, "layers": "conv 30 5 ...\\nrelu\\n..."}.
Each line of the layer description becomes one module (the book's layers and PyTorch's agree):

    conv F KHxKW stride=S pad=P  Conv2d(C, F, (KH, KW), S, P)      weight = W (F, C, KH, KW), bias = b
    pool max K stride=S pad=P    MaxPool2d(K, S, P)                padding never wins a max
    pool avg K stride=S pad=P    AvgPool2d(K, S, P, count_include_pad=True)
    affine D                     [Flatten()] Linear(D_in, D)       weight = W.T (W is (D_in, D))
    batchnorm                    BatchNorm1d/2d(C, eps=1e-7, momentum=0.1)  gamma, beta, running stats
    dropout R                    Dropout(R)                        both inverted: identity in eval
    relu, sigmoid, tanh          ReLU(), Sigmoid(), Tanh()

The model gives the logits; the softmax and cross-entropy are the loss (nn.CrossEntropyLoss).
One difference when training goes on in PyTorch: its batch norm updates running_var with the
unbiased variance (ours, the book's, with the biased one); inference is the same.
"""

import argparse
import gzip
from collections import OrderedDict
import json
import os
import pathlib
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

MODEL_KEY = "backprop.model"
BATCH_NORM_EPS = 1e-7  # backprop's BatchNormalization::EPS
KINDS = {
    "conv": "Conv",
    "pool": "Pool",
    "affine": "Affine",
    "batchnorm": "BatchNorm",
    "dropout": "Dropout",
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
}


# ---- the description language, as backprop's src/describe.rs reads it (NumPy only) ----


def parse(info):
    """The layers of a model's description: one dict each, with its name (Conv1, Affine2, ...
    as backprop names them), the number of its tensors (W1, gamma1, ...), options and shapes."""
    shape = tuple(info["input"])  # (C, H, W), or (D,) once flattened
    counts, weight_layers, layers = {}, 0, []
    for raw in info["layers"].splitlines():
        line = raw.split("#")[0].strip()
        if not line or line.startswith("init"):
            continue
        word, *rest = line.split()
        if word not in KINDS:
            raise ValueError(f"layer {line!r}: not a layer of the description language")
        positional = [w for w in rest if "=" not in w]
        options = dict(w.split("=", 1) for w in rest if "=" in w)
        kind = KINDS[word]
        counts[kind] = counts.get(kind, 0) + 1
        weight_layers += word in ("conv", "affine")
        layer = {"word": word, "name": f"{kind}{counts[kind]}", "number": max(weight_layers, 1)}
        layer["input"] = shape
        shape = _output(layer, positional, options, shape, info["classes"])
        layer["output"] = shape
        layers.append(layer)
    return layers


def _size(word):
    h, _, w = word.partition("x")
    return int(h), int(w or h)


def _output(layer, positional, options, shape, classes):
    """Fills in the layer's options and returns the shape it gives."""
    word = layer["word"]
    if word in ("conv", "pool"):
        if word == "pool":
            layer["pool"] = positional.pop(0)  # max or avg
        else:
            layer["filters"] = int(positional.pop(0))
        kh, kw = _size(positional[0])
        stride = int(options.get("stride", 1 if word == "conv" else kh))
        pad = int(options.get("pad", 0))
        layer.update(kernel=(kh, kw), stride=stride, pad=pad)
        c, h, w = shape
        oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
        return (layer.get("filters", c), oh, ow)
    if word == "affine":
        layer["outputs"] = classes if positional[0] == "classes" else int(positional[0])
        return (layer["outputs"],)
    if word == "dropout":
        layer["ratio"] = float(positional[0])
    return shape


def _torch_names(layer):
    """(PyTorch's state-dict name, backprop's tensor name) of each tensor of the layer."""
    n, name = layer["number"], layer["name"]
    if layer["word"] in ("conv", "affine"):
        return [(f"{name}.weight", f"W{n}"), (f"{name}.bias", f"b{n}")]
    if layer["word"] == "batchnorm":
        return [
            (f"{name}.weight", f"gamma{n}"),
            (f"{name}.bias", f"beta{n}"),
            (f"{name}.running_mean", f"running_mean{n}"),
            (f"{name}.running_var", f"running_var{n}"),
        ]
    return []


def to_state_dict(info, tensors):
    """backprop's tensors as a PyTorch state dict (NumPy arrays) of `build(info)`."""
    state = {}
    for layer in parse(info):
        for torch_name, ours in _torch_names(layer):
            value = tensors[ours]
            if layer["word"] == "affine" and torch_name.endswith(".weight"):
                value = value.T  # Linear keeps (out, in); the book's W is (in, out)
            state[torch_name] = np.ascontiguousarray(value, dtype=np.float32)
        if layer["word"] == "batchnorm":
            state[f"{layer['name']}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    return state


def from_state_dict(info, state):
    """A PyTorch state dict (NumPy arrays) of `build(info)` as backprop's tensors."""
    tensors = {}
    for layer in parse(info):
        for torch_name, ours in _torch_names(layer):
            value = np.asarray(state[torch_name], dtype=np.float32)
            if layer["word"] == "affine" and torch_name.endswith(".weight"):
                value = value.T
            tensors[ours] = np.ascontiguousarray(value)
    return tensors


def read(path):
    """(info, tensors) of a backprop model or checkpoint file."""
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
        if MODEL_KEY not in meta:
            raise ValueError(f"{path}: no {MODEL_KEY} in its metadata: not a backprop model")
        info = json.loads(meta[MODEL_KEY])
        names = [ours for layer in parse(info) for _, ours in _torch_names(layer)]
        missing = [name for name in names if name not in f.keys()]
        if missing:
            raise ValueError(f"{path}: no tensor {missing[0]}: incomplete or another model")
        tensors = {name: f.get_tensor(name) for name in names}
    return info, tensors


def write(path, info, tensors):
    """Writes a backprop model file (whole, or not at all)."""
    keys = ("input", "classes", "layers", "class_names")
    meta = {MODEL_KEY: json.dumps({k: info[k] for k in keys if k in info})}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---- PyTorch ----


def build(info):
    """The nn.Sequential of a model's description, modules named as backprop's layers."""
    import torch.nn as nn

    modules = {}
    for layer in parse(info):
        word, name, shape = layer["word"], layer["name"], layer["input"]
        if word == "conv":
            modules[name] = nn.Conv2d(
                shape[0], layer["filters"], layer["kernel"], layer["stride"], layer["pad"]
            )
        elif word == "pool" and layer["pool"] == "max":
            modules[name] = nn.MaxPool2d(layer["kernel"], layer["stride"], layer["pad"])
        elif word == "pool":
            k, s, p = layer["kernel"], layer["stride"], layer["pad"]
            modules[name] = nn.AvgPool2d(k, s, p, count_include_pad=True)
        elif word == "affine":
            if len(shape) == 3:
                modules[f"{name}_flatten"] = nn.Flatten()
            modules[name] = nn.Linear(int(np.prod(shape)), layer["outputs"])
        elif word == "batchnorm":
            norm = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
            modules[name] = norm(shape[0], eps=BATCH_NORM_EPS, momentum=0.1)
        elif word == "dropout":
            modules[name] = nn.Dropout(layer["ratio"])
        else:
            modules[name] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[word]()
    return nn.Sequential(OrderedDict(modules))


def load(path):
    """(model, info): the model file as an nn.Sequential in eval mode, with its weights."""
    import torch

    info, tensors = read(path)
    model = build(info)
    state = {k: torch.from_numpy(v) for k, v in to_state_dict(info, tensors).items()}
    model.load_state_dict(state)
    return model.eval(), info


def save(model, info, path):
    """Writes `model` (built by `build(info)`, trained or not) as a backprop model file."""
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    write(path, info, from_state_dict(info, state))


# ---- MNIST and the command line ----


def mnist(data_dir, part):
    """(images (N, 1, H, W) float32 in [0, 1], as backprop normalizes them; labels int64)."""
    prefix = {"train": "train", "test": "t10k"}[part]

    def raw(name):
        for path in (pathlib.Path(data_dir) / name, pathlib.Path(data_dir) / f"{name}.gz"):
            if path.exists():
                data = path.read_bytes()
                return gzip.decompress(data) if path.suffix == ".gz" else data
        sys.exit(f"{data_dir}: no {name}[.gz]")

    images = raw(f"{prefix}-images-idx3-ubyte")
    n, rows, cols = np.frombuffer(images[4:16], dtype=">u4")
    x = np.frombuffer(images[16:], np.uint8).reshape(n, 1, rows, cols)
    labels = np.frombuffer(raw(f"{prefix}-labels-idx1-ubyte")[8:], np.uint8)
    return x.astype(np.float32) / np.float32(255), labels.astype(np.int64)


def probabilities(model, x, batch=500):
    """The softmax of the model's logits for x, in eval mode, as NumPy."""
    import torch

    model.eval()
    with torch.no_grad():
        parts = [
            torch.softmax(model(torch.from_numpy(x[i : i + batch])), 1)
            for i in range(0, len(x), batch)
        ]
    return torch.cat(parts).numpy()


def train_epochs(model, x, t, epochs, lr, batch_size, seed):
    """Adam on shuffled mini-batches with the cross-entropy loss; prints each epoch's loss."""
    import torch

    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, t = torch.from_numpy(x), torch.from_numpy(t)
    for epoch in range(epochs):
        model.train()
        order, total = torch.randperm(len(x)), 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), t[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("eval", "probabilities", "train"):
        s = sub.add_parser(name)
        s.add_argument("model")
        s.add_argument("data")
        if name != "eval":
            s.add_argument("out")
    s = sub.choices["train"]
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--lr", type=float, default=0.001)
    s.add_argument("--batch-size", type=int, default=100)
    s.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("roundtrip")
    s.add_argument("model")
    s.add_argument("out")
    args = p.parse_args(argv)

    if args.command == "roundtrip":
        info, tensors = read(args.model)
        write(args.out, info, from_state_dict(info, to_state_dict(info, tensors)))
        return
    model, info = load(args.model)
    x, t = mnist(args.data, "test")
    if args.command == "train":
        xs, ts = mnist(args.data, "train")
        train_epochs(model, xs, ts, args.epochs, args.lr, args.batch_size, args.seed)
        save(model, info, args.out)
    p = probabilities(model, x)
    if args.command == "probabilities":
        save_file({"probabilities": np.ascontiguousarray(p)}, args.out)
    print(f"test accuracy {(p.argmax(1) == t).mean():.4f} ({len(t)} images, PyTorch)")


if __name__ == "__main__":
    main(sys.argv[1:])
