# The MLP 784-256-256-10 (Adam, batch 128) in PyTorch, for comparison with
#   backprop train --model mlp --hidden 256,256 --init he --optimizer adam --lr 0.001 --epochs 10 --batch-size 128
# 784-256-256-10 ReLU, He-normal weights and zero biases (as backprop draws them), Adam 1e-3,
# batch 128, shuffled epochs, pixels / 255, 2 threads; test accuracy after each epoch, 3 seeds.
#     python3 bench/peers/mlp_pytorch.py [data/mnist]      (needs torch and numpy)
import gzip, numpy as np, torch, time, sys
torch.set_num_threads(2)
def idx(p, off): return np.frombuffer(gzip.open(p).read(), np.uint8, offset=off)
d = sys.argv[1] if len(sys.argv) > 1 else "data/mnist"
xtr = torch.tensor(idx(f"{d}/train-images-idx3-ubyte.gz", 16).reshape(-1, 784) / 255.0, dtype=torch.float32)
ytr = torch.tensor(idx(f"{d}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
xte = torch.tensor(idx(f"{d}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784) / 255.0, dtype=torch.float32)
yte = torch.tensor(idx(f"{d}/t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
for seed in (0, 1, 2):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    for m in net:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0, (2.0 / m.in_features) ** 0.5); torch.nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    accs = []
    for epoch in range(10):
        t = time.perf_counter()
        perm = torch.randperm(60000)
        for i in range(0, 60000, 128):
            b = perm[i:i + 128]
            opt.zero_grad(); loss = torch.nn.functional.cross_entropy(net(xtr[b]), ytr[b]); loss.backward(); opt.step()
        with torch.no_grad():
            accs.append(round((net(xte).argmax(1) == yte).float().mean().item(), 4))
    print(seed, accs, f"{time.perf_counter() - t:.2f} s last epoch", flush=True)
