#!/usr/bin/env python3
"""Runs a command in a pseudo-terminal and answers its prompts, like a person would.

    pty_driver.py [--expect TEXT ANSWER]... -- COMMAND [ARG]...

Each TEXT is waited for in order (in the terminal output, ANSI escapes removed); when it
appears, ANSWER and a newline are typed. The whole transcript goes to stdout; the exit status
is the command's (124 when an expected text never came within the timeout).
Used by tests/guided.rs: the guided prompts only appear when stdin and stderr are terminals.
"""
import os
import pty
import re
import select
import sys
import time

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
TIMEOUT = float(os.environ.get("PTY_DRIVER_TIMEOUT", "90"))


def main():
    args = sys.argv[1:]
    script = []
    while args and args[0] == "--expect":
        script.append((args[1].encode(), args[2].encode()))
        args = args[3:]
    if not args or args[0] != "--":
        sys.exit("usage: pty_driver.py [--expect TEXT ANSWER]... -- COMMAND [ARG]...")
    cmd = args[1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    seen = b""
    raw = b""
    pos = 0
    deadline = time.time() + TIMEOUT
    status = None
    while True:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            raw += chunk
            seen = ANSI.sub(b"", raw)
        if script:
            text, answer = script[0]
            idx = seen.find(text, pos)
            if idx >= 0:
                pos = idx + len(text)
                os.write(fd, answer + b"\n")
                script.pop(0)
                deadline = time.time() + TIMEOUT
        if time.time() > deadline:
            os.kill(pid, 9)
            sys.stdout.buffer.write(seen)
            sys.stdout.write("\n[pty_driver] timed out waiting for %r\n" % (script[0][0] if script else b"exit"))
            sys.exit(124)
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            # drain what is left
            try:
                while True:
                    r, _, _ = select.select([fd], [], [], 0.1)
                    if not r:
                        break
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    raw += chunk
            except OSError:
                pass
            seen = ANSI.sub(b"", raw)
            break
    if status is None:
        _, status = os.waitpid(pid, 0)
    sys.stdout.buffer.write(seen)
    if script:
        sys.stdout.write("\n[pty_driver] the command ended before %r appeared\n" % script[0][0])
    sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    main()
