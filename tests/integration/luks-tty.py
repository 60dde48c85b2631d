#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Run a command on a new pseudo-terminal (its controlling terminal) and type
# ANSWERs at its passphrase prompts, as a user at a terminal would.
# usage: luks-tty.py [--interrupt] ANSWER... -- CMD [ARG...]
# Prints what the terminal showed, then "exit N" (or "signal N") and, with
# --interrupt (Ctrl-C at the first prompt instead of an answer), "echo on" or
# "echo off": the terminal's echo flag after the command ended.
import os
import pty
import select
import signal
import sys
import termios
import time

args = sys.argv[1:]
interrupt = args[:1] == ["--interrupt"]
if interrupt:
    args = args[1:]
sep = args.index("--")
answers, cmd = args[:sep], args[sep + 1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
shown = b""
seen = 0  # prompts answered
deadline = time.time() + 60
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    if shown.lower().count(b"passphrase") > seen:
        seen += 1
        time.sleep(0.2)  # let it turn echo off before typing
        if interrupt:
            os.kill(pid, signal.SIGINT)
            continue
        os.write(fd, (answers.pop(0) if answers else "").encode() + b"\n")
_, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode(errors="replace").replace("\r", ""))
if os.WIFEXITED(status):
    print("exit", os.WEXITSTATUS(status))
else:
    print("signal", os.WTERMSIG(status))
if interrupt:
    print("echo on" if termios.tcgetattr(fd)[3] & termios.ECHO else "echo off")
