"""A real pseudo-terminal for tests and the README screenshot: a command runs on a pty (its
controlling terminal, so a resize sends it SIGWINCH), and everything it writes is fed to a
`pyte` screen, a VT100 emulator, so a test reads the screen a person would see."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Sequence
from pathlib import Path

import pyte


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_terminal() -> None:
    """In the child: make the pty (already its stdin) the session's controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    def __init__(
        self, argv: Sequence[str], cols: int, rows: int, env: dict[str, str], cwd: Path
    ) -> None:
        self.screen = pyte.Screen(cols, rows)
        self._stream = pyte.ByteStream(self.screen)
        self._master, slave = pty.openpty()
        _set_size(slave, cols, rows)
        self.process = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        self.is_open = True
        self.num_bytes = 0

    def pump(self, timeout_s: float) -> bool:
        """Feed what the program wrote within `timeout_s` to the screen; False once the program
        has closed the terminal (exited) and everything it wrote has been read."""
        if not self.is_open:
            return False
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._master], [], [], left)
            if not ready:
                break
            try:
                data = os.read(self._master, 65536)
            except OSError as e:  # EIO: every copy of the pty's other end is closed
                if e.errno != errno.EIO:
                    raise
                data = b""
            if not data:
                self.is_open = False
                return False
            self.num_bytes += len(data)
            self._stream.feed(data)
        return True

    def resize(self, cols: int, rows: int) -> None:
        """What a terminal window does when dragged: new size on the pty (the kernel sends the
        program SIGWINCH), and the emulator's screen takes the new size."""
        self.screen.resize(rows, cols)
        _set_size(self._master, cols, rows)

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())

    def finish(self, timeout_s: float = 120) -> int:
        """Read until the program exits; its exit code."""
        deadline = time.monotonic() + timeout_s
        while self.pump(0.1) and time.monotonic() < deadline:
            pass
        try:
            return self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self._master >= 0:
            os.close(self._master)
            self._master = -1
