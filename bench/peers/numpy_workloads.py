# The workloads W2 and W3 of `backprop bench` in the book's NumPy code ("Deep Learning from
# Scratch": common/layers.py, common/optimizer.py's Adam, common/util.py's im2col/col2im,
# ch07/simple_convnet.py), f32 data as load_mnist gives; W1 is bench/train_neuralnet.py.
#   W2  784-256-256-10 ReLU, He weights, Adam 1e-3, batch 128, one shuffled epoch
#   W3  SimpleConvNet, std 0.01, Adam 1e-3, batch 100, one shuffled epoch
# Prints one JSON line: wall_s (updates and the train/test evaluation), updates_s, test_accuracy.
#     python3 bench/peers/numpy_workloads.py W2|W3 [data/mnist]        (needs numpy)
import json, os, sys, time
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from train_neuralnet import Affine, Relu, SoftmaxWithLoss, load_mnist  # noqa: E402


class Adam:  # common/optimizer.py
    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr, self.beta1, self.beta2, self.iter, self.m, self.v = lr, beta1, beta2, 0, None, None

    def update(self, params, grads):
        if self.m is None:
            self.m = {k: np.zeros_like(v) for k, v in params.items()}
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        for key in params.keys():
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):  # common/util.py
    N, C, H, W = input_data.shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    img = np.pad(input_data, [(0, 0), (0, 0), (pad, pad), (pad, pad)], 'constant')
    col = np.zeros((N, C, filter_h, filter_w, out_h, out_w), dtype=input_data.dtype)
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            col[:, :, y, x, :, :] = img[:, :, y:y_max:stride, x:x_max:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, -1)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    N, C, H, W = input_shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    col = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1), dtype=col.dtype)
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            img[:, :, y:y_max:stride, x:x_max:stride] += col[:, :, y, x, :, :]
    return img[:, :, pad:H + pad, pad:W + pad]


class Convolution:  # common/layers.py
    def __init__(self, W, b, stride=1, pad=0):
        self.W, self.b, self.stride, self.pad = W, b, stride, pad

    def forward(self, x):
        FN, C, FH, FW = self.W.shape
        N, C, H, W = x.shape
        out_h = 1 + int((H + 2 * self.pad - FH) / self.stride)
        out_w = 1 + int((W + 2 * self.pad - FW) / self.stride)
        col = im2col(x, FH, FW, self.stride, self.pad)
        col_W = self.W.reshape(FN, -1).T
        out = np.dot(col, col_W) + self.b
        out = out.reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)
        self.x, self.col, self.col_W = x, col, col_W
        return out

    def backward(self, dout):
        FN, C, FH, FW = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        self.db = np.sum(dout, axis=0)
        self.dW = np.dot(self.col.T, dout).transpose(1, 0).reshape(FN, C, FH, FW)
        dcol = np.dot(dout, self.col_W.T)
        return col2im(dcol, self.x.shape, FH, FW, self.stride, self.pad)


class Pooling:
    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad

    def forward(self, x):
        N, C, H, W = x.shape
        out_h = int(1 + (H - self.pool_h) / self.stride)
        out_w = int(1 + (W - self.pool_w) / self.stride)
        col = im2col(x, self.pool_h, self.pool_w, self.stride, self.pad).reshape(-1, self.pool_h * self.pool_w)
        self.x, self.arg_max = x, np.argmax(col, axis=1)
        return np.max(col, axis=1).reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)

    def backward(self, dout):
        dout = dout.transpose(0, 2, 3, 1)
        pool_size = self.pool_h * self.pool_w
        dmax = np.zeros((dout.size, pool_size), dtype=dout.dtype)
        dmax[np.arange(self.arg_max.size), self.arg_max.flatten()] = dout.flatten()
        dmax = dmax.reshape(dout.shape + (pool_size,))
        dcol = dmax.reshape(dmax.shape[0] * dmax.shape[1] * dmax.shape[2], -1)
        return col2im(dcol, self.x.shape, self.pool_h, self.pool_w, self.stride, self.pad)


class Net:
    """The layers in order and the book's gradient(): forward, loss, backward in reverse."""

    def __init__(self, layers, params):
        self.layers, self.params, self.last = layers, params, SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def accuracy(self, x, t, batch=1000):
        return sum(np.sum(np.argmax(self.predict(x[i:i + batch]), axis=1) == t[i:i + batch])
                   for i in range(0, len(x), batch)) / len(x)

    def gradient(self, x, t):
        self.last.forward(self.predict(x), t)
        dout = self.last.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads = {}
        for name, layer in self.layers.items():
            if hasattr(layer, "dW"):
                n = name[-1]
                grads["W" + n], grads["b" + n] = layer.dW, layer.db
        return grads


def mlp():
    sizes, params, layers = [784, 256, 256, 10], {}, OrderedDict()
    for i in range(1, 4):
        params[f"W{i}"] = (np.sqrt(2.0 / sizes[i - 1]) * np.random.randn(sizes[i - 1], sizes[i])).astype(np.float32)
        params[f"b{i}"] = np.zeros(sizes[i], np.float32)
        layers[f"Affine{i}"] = Affine(params[f"W{i}"], params[f"b{i}"])
        if i < 3:
            layers[f"Relu{i}"] = Relu()
    return Net(layers, params)


def simple_convnet():  # ch07/simple_convnet.py
    p = {"W1": (0.01 * np.random.randn(30, 1, 5, 5)).astype(np.float32), "b1": np.zeros(30, np.float32),
         "W2": (0.01 * np.random.randn(4320, 100)).astype(np.float32), "b2": np.zeros(100, np.float32),
         "W3": (0.01 * np.random.randn(100, 10)).astype(np.float32), "b3": np.zeros(10, np.float32)}
    layers = OrderedDict([("Conv1", Convolution(p["W1"], p["b1"])), ("Relu1", Relu()), ("Pool1", Pooling(2, 2, 2)),
                          ("Affine2", Affine(p["W2"], p["b2"])), ("Relu2", Relu()), ("Affine3", Affine(p["W3"], p["b3"]))])
    return Net(layers, p)


def main():
    work = sys.argv[1].upper()
    (x_train, t_train), (x_test, t_test) = load_mnist(sys.argv[2] if len(sys.argv) > 2 else "data/mnist")
    np.random.seed(0)
    if work == "W3":
        x_train, x_test = x_train.reshape(-1, 1, 28, 28), x_test.reshape(-1, 1, 28, 28)
    net, batch = (mlp(), 128) if work == "W2" else (simple_convnet(), 100)
    opt = Adam(0.001)
    start = time.perf_counter()
    perm = np.random.permutation(len(x_train))
    for i in range(0, len(x_train), batch):
        b = perm[i:i + batch]
        grads = net.gradient(x_train[b], t_train[b])
        opt.update(net.params, grads)
    updates = time.perf_counter() - start
    net.accuracy(x_train, t_train)
    acc = net.accuracy(x_test, t_test)
    print(json.dumps({"workload": work, "wall_s": time.perf_counter() - start, "updates_s": updates,
                      "test_accuracy": float(acc)}), flush=True)


if __name__ == "__main__":
    main()
