# SimpleConvNet (the book's ch. 7) in PyTorch, for comparison with
#   backprop train --model simple-cnn --optimizer adam --lr 0.001 --epochs N --batch-size 100
# conv 30@5x5 -> ReLU -> max pool 2 -> affine 100 -> ReLU -> affine 10, N(0, 0.01²) weights,
# Adam 1e-3, batch 100, shuffled epochs, pixels / 255, 2 threads; per-epoch seconds (training
# only, then the test accuracy).
#     python3 bench/peers/simple_cnn_pytorch.py [data/mnist] [EPOCHS]      (needs torch, numpy)
import gzip, sys, time
import numpy as np
import torch

torch.set_num_threads(2)
d = sys.argv[1] if len(sys.argv) > 1 else "data/mnist"
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
def idx(p, off): return np.frombuffer(gzip.open(p).read(), np.uint8, offset=off)
xtr = torch.tensor(idx(f"{d}/train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28) / 255.0, dtype=torch.float32)
ytr = torch.tensor(idx(f"{d}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
xte = torch.tensor(idx(f"{d}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28) / 255.0, dtype=torch.float32)
yte = torch.tensor(idx(f"{d}/t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(1, 30, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2), torch.nn.Flatten(),
                          torch.nn.Linear(30 * 12 * 12, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
for m in net:
    if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
        torch.nn.init.normal_(m.weight, 0, 0.01); torch.nn.init.zeros_(m.bias)
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
for epoch in range(epochs):
    t = time.perf_counter()
    perm = torch.randperm(60000)
    for i in range(0, 60000, 100):
        b = perm[i:i + 100]
        opt.zero_grad(); torch.nn.functional.cross_entropy(net(xtr[b]), ytr[b]).backward(); opt.step()
    seconds = time.perf_counter() - t
    with torch.no_grad():
        acc = (net(xte).argmax(1) == yte).float().mean().item()
    print(f"epoch {epoch + 1}: {seconds:.2f} s, test accuracy {acc:.4f}", flush=True)
