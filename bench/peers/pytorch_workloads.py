# The three workloads of `backprop bench` in PyTorch (CPU, 2 threads), as ours run them:
#   W1  TwoLayerNet 784-50-10, N(0, 0.01²) weights, SGD 0.1, batch 100 drawn with replacement,
#       10000 updates, train and test accuracy every 600 updates (the book's ch05 run)
#   W2  784-256-256-10 ReLU, He-normal weights, Adam 1e-3, batch 128, one shuffled epoch
#   W3  SimpleConvNet (conv 30@5x5, ReLU, max pool 2, affine 100, ReLU, affine 10), N(0, 0.01²),
#       Adam 1e-3, batch 100, one shuffled epoch; W2 and W3 evaluate train and test once
# Prints one JSON line: wall_s (updates and evaluations), updates_s, test_accuracy.
#     python3 bench/peers/pytorch_workloads.py W1|W2|W3 [data/mnist]     (needs torch, numpy)
import gzip, json, sys, time
import numpy as np
import torch

torch.set_num_threads(2)
work = sys.argv[1].upper()
d = sys.argv[2] if len(sys.argv) > 2 else "data/mnist"
def idx(p, off): return np.frombuffer(gzip.open(p).read(), np.uint8, offset=off)
shape = (-1, 1, 28, 28) if work == "W3" else (-1, 784)
xtr = torch.tensor(idx(f"{d}/train-images-idx3-ubyte.gz", 16).reshape(shape) / 255.0, dtype=torch.float32)
ytr = torch.tensor(idx(f"{d}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
xte = torch.tensor(idx(f"{d}/t10k-images-idx3-ubyte.gz", 16).reshape(shape) / 255.0, dtype=torch.float32)
yte = torch.tensor(idx(f"{d}/t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
torch.manual_seed(0)
L = torch.nn
if work == "W1":
    net = L.Sequential(L.Linear(784, 50), L.ReLU(), L.Linear(50, 10)); std = lambda m: 0.01
elif work == "W2":
    net = L.Sequential(L.Linear(784, 256), L.ReLU(), L.Linear(256, 256), L.ReLU(), L.Linear(256, 10))
    std = lambda m: (2.0 / m.in_features) ** 0.5
else:
    net = L.Sequential(L.Conv2d(1, 30, 5), L.ReLU(), L.MaxPool2d(2, 2), L.Flatten(),
                       L.Linear(30 * 12 * 12, 100), L.ReLU(), L.Linear(100, 10)); std = lambda m: 0.01
for m in net:
    if isinstance(m, (L.Conv2d, L.Linear)):
        L.init.normal_(m.weight, 0, std(m)); L.init.zeros_(m.bias)
opt = torch.optim.SGD(net.parameters(), lr=0.1) if work == "W1" else torch.optim.Adam(net.parameters(), lr=1e-3)

def accuracy(x, y):
    with torch.no_grad():
        return sum((net(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item() for i in range(0, len(x), 1000)) / len(x)

def update(b):
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(xtr[b]), ytr[b]).backward(); opt.step()

start = time.perf_counter(); updates = 0.0
if work == "W1":
    for i in range(10000):
        t = time.perf_counter(); update(torch.randint(0, 60000, (100,))); updates += time.perf_counter() - t
        if i % 600 == 0:
            acc = (accuracy(xtr, ytr), accuracy(xte, yte))
else:
    batch = 128 if work == "W2" else 100
    t = time.perf_counter(); perm = torch.randperm(60000)
    for i in range(0, 60000, batch):
        update(perm[i:i + batch])
    updates = time.perf_counter() - t
    acc = (accuracy(xtr, ytr), accuracy(xte, yte))
print(json.dumps({"workload": work, "wall_s": time.perf_counter() - start, "updates_s": updates, "test_accuracy": acc[1]}), flush=True)
