#!/usr/bin/env python3
"""A simulated meter on a real pseudo-terminal: writes a capture's telegram once per period at the
line's byte rate, and writes the pty's device path to a file so sml can open it.

usage: fake_meter.py CAPTURE PATH_FILE [--baud 115200] [--period 1.0] [--count N]
"""
import argparse
import os
import pty
import time
import tty

ap = argparse.ArgumentParser()
ap.add_argument("capture")
ap.add_argument("path_file")
ap.add_argument("--baud", type=int, default=115200)
ap.add_argument("--period", type=float, default=1.0)
ap.add_argument("--count", type=int, default=0, help="telegrams to send; 0 = until killed")
args = ap.parse_args()

data = open(args.capture, "rb").read()
master, slave = pty.openpty()
tty.setraw(slave)
name = os.ttyname(slave)
with open(args.path_file + ".tmp", "w") as f:
    f.write(name)
os.rename(args.path_file + ".tmp", args.path_file)

byte_time = 10.0 / args.baud  # start + 8 data + stop bits
chunk = 64
sent = 0
while args.count == 0 or sent < args.count:
    start = time.monotonic()
    for i in range(0, len(data), chunk):
        os.write(master, data[i:i + chunk])
        time.sleep(len(data[i:i + chunk]) * byte_time)
    sent += 1
    time.sleep(max(0.0, args.period - (time.monotonic() - start)))
