#!/usr/bin/env python3
"""Latency of one drawn digit through `backprop serve`: median and p99, server side
(`server_ms`: reading the PNG, preparing it as `backprop predict` does, the forward pass)
and as the client sees it (loopback, one connection a request), for each model given.

    bench/serve_latency.py BACKPROP_BINARY MODEL... [--requests N] [--endpoint predict]

The digit is a 7 drawn as the page draws one: two black strokes, 18 px wide, on a white
280x280 canvas, sent as a PNG. Models are measured in alternating rounds of 50 requests
after 20 to warm up, so that both see the same state of the machine. Standard library only.
"""

import argparse
import json
import struct
import subprocess
import time
import urllib.parse
import urllib.request
import zlib


def drawn_seven(size=280, width=18):
    """A PNG (grey, 8 bit) of a 7: a bar across and a stroke down, round-ended."""
    strokes = [((70, 60), (210, 60)), ((210, 60), (120, 230))]
    half = width / 2
    rows = []
    for y in range(size):
        row = bytearray([255] * size)
        for x in range(size):
            for (x0, y0), (x1, y1) in strokes:
                dx, dy = x1 - x0, y1 - y0
                t = max(0.0, min(1.0, ((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy)))
                px, py = x0 + t * dx, y0 + t * dy
                if (x - px) ** 2 + (y - py) ** 2 <= half * half:
                    row[x] = 0
                    break
        rows.append(b"\x00" + bytes(row))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--endpoint", default="predict")
    args = parser.parse_args()
    server = subprocess.Popen([args.binary, "serve", *args.models, "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split()[1]
        names = [m["name"] for m in json.load(urllib.request.urlopen(url + "/api/models"))["models"]]
        png = drawn_seven()
        server_ms = {name: [] for name in names}
        client_ms = {name: [] for name in names}
        top = {}

        def post(name):
            query = urllib.parse.urlencode({"model": name})
            request = urllib.request.Request(f"{url}/api/{args.endpoint}?{query}", data=png,
                                             headers={"Content-Type": "image/png"})
            start = time.perf_counter()
            reply = json.load(urllib.request.urlopen(request))
            elapsed = (time.perf_counter() - start) * 1e3
            top[name] = reply["top"][0] if "top" in reply else {"class": reply["class"], "probability": float("nan")}
            return reply["server_ms"], elapsed

        for name in names:
            for _ in range(20):
                post(name)
        rounds = max(1, args.requests // 50)
        for _ in range(rounds):
            for name in names:
                for _ in range(50):
                    s, c = post(name)
                    server_ms[name].append(s)
                    client_ms[name].append(c)
        print(f"{args.endpoint}, a drawn 7 (PNG 280x280), {rounds * 50} requests a model, "
              f"alternating rounds of 50")
        print(f"{'model':40} {'top':>9}  {'server ms p50':>13} {'p99':>7}  {'client ms p50':>13} {'p99':>7}")
        for name in names:
            t = top[name]
            print(f"{name:40} {t['class']:>2} {t['probability']:6.3f}  "
                  f"{percentile(server_ms[name], 0.5):13.3f} {percentile(server_ms[name], 0.99):7.3f}  "
                  f"{percentile(client_ms[name], 0.5):13.3f} {percentile(client_ms[name], 0.99):7.3f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
