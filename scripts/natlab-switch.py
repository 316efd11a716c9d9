#!/usr/bin/env python3
"""A small user-space Ethernet switch for the NAT lab, with delay and loss.

This kernel has no netem (and no fq), so the lab's internet namespace runs
this instead of a bridge: it reads every frame arriving on its ports (veth
ends) through AF_PACKET sockets, learns source MACs, and sends each frame out
of the right port (or every other port, for broadcasts and unknown
destinations) after `--delay` milliseconds, dropping `--loss` percent of them
at random. The hosts have tx checksum/TSO/GSO offloads off, so frames arrive
whole and with real checksums. It only ever forwards between its own ports:
nothing leaves the lab's namespaces.

With `--control FILE`, one port's link can be impaired while the switch
runs: each line of FILE is `PORT DELAY_MS LOSS_PERCENT`, added to every frame
that enters or leaves through PORT (`natlab.sh impair` writes it; the file is
re-read when it changes).

    natlab-switch.py --delay 40 --loss 1 [--control FILE] PORT...
"""
import argparse
import heapq
import os
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=0.0, help="one-way delay in ms")
    ap.add_argument("--loss", type=float, default=0.0, help="drop this percent of frames")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--control", default=None, help="per-port impairments, re-read on change")
    ap.add_argument("ports", nargs="+")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    socks = {}
    for port in args.ports:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((port, 0))
        s.setblocking(False)
        socks[s.fileno()] = (port, s)
    macs = {}  # MAC -> fileno of the port it was seen on
    queue = []  # (due, seq, out fileno, frame)
    seq = 0
    delay = args.delay / 1000.0
    running = True
    by_name = {name: fd for fd, (name, _) in socks.items()}
    impaired = {}  # fileno -> (extra delay s, extra loss %)
    control_seen = None
    next_check = 0.0

    def read_control():
        nonlocal control_seen
        try:
            st = os.stat(args.control)
        except OSError:
            return
        if st.st_mtime_ns == control_seen:
            return
        control_seen = st.st_mtime_ns
        impaired.clear()
        with open(args.control) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[0] in by_name:
                    impaired[by_name[parts[0]]] = (float(parts[1]) / 1000.0, float(parts[2]))
        print(f"natlab-switch: impaired {[(socks[fd][0], v) for fd, v in impaired.items()]}", flush=True)

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    poller = select.epoll()
    for fd in socks:
        poller.register(fd, select.EPOLLIN)
    print(f"natlab-switch: {len(socks)} ports, delay {args.delay} ms, loss {args.loss} %", flush=True)
    while running:
        now = time.monotonic()
        if args.control and now >= next_check:
            read_control()
            next_check = now + 0.1
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                socks[out][1].send(frame)
            except OSError:
                pass
        timeout = max(0.0, queue[0][0] - now) if queue else 0.1
        for fd, _ in poller.poll(timeout):
            sock = socks[fd][1]
            while True:
                try:
                    frame, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                except OSError:
                    break
                if addr[2] == PACKET_OUTGOING or len(frame) < 14:
                    continue
                dst, src = frame[0:6], frame[6:12]
                macs[src] = fd
                if args.loss and rng.random() * 100.0 < args.loss:
                    continue
                if dst[0] & 1 or dst not in macs:
                    outs = [o for o in socks if o != fd]
                else:
                    outs = [macs[dst]] if macs[dst] != fd else []
                for o in outs:
                    extra_delay, extra_loss = 0.0, 0.0
                    for end in (fd, o):
                        d, l = impaired.get(end, (0.0, 0.0))
                        extra_delay += d
                        extra_loss += l
                    if extra_loss and rng.random() * 100.0 < extra_loss:
                        continue
                    seq += 1
                    heapq.heappush(queue, (time.monotonic() + delay + extra_delay, seq, o, frame))
    return 0


if __name__ == "__main__":
    sys.exit(main())
