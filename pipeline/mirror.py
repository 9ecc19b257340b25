"""A loopback HTTP server for a folder of media, so that offline runs take the real download path.

The demo serves ``sample/media/`` on 127.0.0.1 while ``dvc repro`` runs, and the download stage
fetches it with yt-dlp and HTTP exactly as it would fetch real sources. Byte ranges are honoured,
as a video host's are, so a killed download resumes.

    python -m pipeline.mirror --root sample/media --port 8765 -- dvc repro
"""

from __future__ import annotations

import argparse
import errno
import functools
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """Serves files with single byte-range support; logs nothing."""

    _remaining: int | None = None  # bytes left to send of a range request

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_head(self):  # noqa: ANN201 (the base class's signature)
        self._remaining = None
        match = RANGE.match(self.headers.get("Range", "").strip())
        path = Path(self.translate_path(self.path))
        if not match or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start_text, end_text = match.groups()
        if start_text:
            start, end = int(start_text), int(end_text) if end_text else size - 1
        else:  # "bytes=-N": the last N bytes
            start, end = max(size - int(end_text or 0), 0), size - 1
        end = min(end, size - 1)
        if start >= size or start > end:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        f = path.open("rb")
        f.seek(start)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile) -> None:  # noqa: ANN001
        remaining = self._remaining
        if remaining is None:
            return super().copyfile(source, outputfile)
        while remaining > 0 and (chunk := source.read(min(1 << 16, remaining))):
            outputfile.write(chunk)
            remaining -= len(chunk)

    def end_headers(self) -> None:
        if not self.headers.get("Range"):
            self.send_header("Accept-Ranges", "bytes")
        super().end_headers()


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        """A client hanging up early (yt-dlp probing a file's start) is normal, not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serve(root: Path | str, port: int = 0, host: str = "127.0.0.1",
          handler: type[SimpleHTTPRequestHandler] = RangeRequestHandler) -> Iterator[str]:
    """Serve ``root`` on ``host:port`` in a thread; yields the base URL. Port 0 picks a free port."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder to serve")
    try:
        server = QuietServer((host, port), functools.partial(handler, directory=str(root)))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise OSError(f"port {port} on {host} is taken; stop what uses it or pass --port") from None
        raise
    thread = threading.Thread(target=server.serve_forever, name="mirror", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a folder on loopback while a command runs.")
    parser.add_argument("--root", type=Path, default=Path("sample/media"))
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    try:
        with serve(args.root, args.port) as url:
            print(f"mirror: serving {args.root} at {url}", file=sys.stderr)
            return subprocess.call(command)
    except OSError as e:
        print(f"mirror: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
