"""Go on training a backprop model with PyTorch's DistributedDataParallel, on many processes
or machines, and write it back in backprop's format.

    torchrun --standalone --nproc_per_node=2 python/train_ddp.py MODEL DATA_DIR OUT \\
        [--epochs 1] [--lr 0.001] [--batch-size 100] [--seed 0]

Every process holds the whole model and takes its share of each epoch (DistributedSampler);
after each backward pass the gradients are averaged across processes (all-reduce: gloo on
CPUs, nccl on GPUs), so all copies take the same step. --batch-size is the global batch,
split between the processes, so that the learning rate means what it means in one process.
Rank 0 writes OUT, which `backprop eval` and `predict` read. For several machines, give
torchrun --nnodes, --node_rank and --rdzv_endpoint instead of --standalone.
"""

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backprop_torch as bt  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}" if cuda else "cpu")
    torch.manual_seed(args.seed)

    model, info = bt.load(args.model)
    model.to(device).train()
    ddp = DistributedDataParallel(model)
    x, t = bt.mnist(args.data, "train")
    train = TensorDataset(torch.from_numpy(x), torch.from_numpy(t))
    sampler = DistributedSampler(train, shuffle=True, seed=args.seed)
    loader = DataLoader(train, batch_size=args.batch_size // world, sampler=sampler)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        total = torch.zeros(2, device=device)  # loss sum, samples
        for xb, tb in loader:
            xb, tb = xb.to(device), tb.to(device)
            optimizer.zero_grad()
            loss = loss_fn(ddp(xb), tb)
            loss.backward()  # DDP averages the gradients across processes here
            optimizer.step()
            total += torch.stack([loss.detach() * len(tb), torch.tensor(len(tb), device=device)])
        dist.all_reduce(total)
        if rank == 0:
            seconds = time.perf_counter() - start
            print(f"epoch {epoch + 1}/{args.epochs}: loss {total[0] / total[1]:.4f} ({seconds:.1f} s, {world} processes)")
    if rank == 0:
        model.cpu()
        bt.save(model, info, args.out)
        xt, tt = bt.mnist(args.data, "test")
        accuracy = (bt.probabilities(model, xt).argmax(1) == tt).mean()
        print(f"test accuracy {accuracy:.4f}; wrote {args.out}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
