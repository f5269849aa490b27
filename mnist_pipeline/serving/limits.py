"""Every bound that `mnist-pipeline serve` enforces itself (docs/serving.md lists them).

Sized for a 2-core machine serving a drawing page and a lab's scripts: a normal request
never meets them, and together they keep the process under 1 GB and answering however
many slow or hostile clients connect. Per-client limits (rate, connections per IP) and TLS
belong to the reverse proxy in front of it.
"""

from __future__ import annotations

# Request bodies, checked on Content-Length before reading and again while reading.
MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # a multipart body: a phone photo fits, a video does not
MAX_JSON_BYTES = 64 * 1024  # 784 pixel values take < 4 KB; room for whitespace
# Bytes of request bodies held in memory by all requests together; past it, a 503.
MAX_BUFFERED_BODY_BYTES = 64 * 1024 * 1024

# Slow clients (serving/protocol.py). The request line and headers must arrive within
# HEADER_TIMEOUT_S of the connection (or of the previous answer on it); the body within
# BODY_TIMEOUT_S plus 1 s per MIN_BODY_BYTES_PER_S received, so 1 byte/s is dropped after
# ~10 s while a full upload may take 90 s (58 KB/s). A 408 says so when it can.
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
MIN_BODY_BYTES_PER_S = 64 * 1024
KEEP_ALIVE_S = 5  # an idle connection between requests (uvicorn's own timeout)
# After answering before the body was read (413): read and discard for this long, so the
# client sees the answer rather than a reset, then close.
LINGER_S = 2.0

# Concurrency. Open connections cost a file descriptor and a few KB; past this many, new
# ones are closed at once. Requests in flight (headers read, answer not yet sent) are what
# costs memory and CPU; past this many, a 503. Idle and half-sent connections are
# connections, not requests: they never take a request's place.
MAX_CONNECTIONS = 1000
MAX_REQUESTS_IN_FLIGHT = 256

# Image decoding (serving/decoding.py): a few at once on their own threads, a short
# queue, then 503. Memory is budgeted from the header's pixel count: the peak of one
# decode, measured per pixel at 4096x4096 (docs/serving.md), is 9.3 bytes for a palette
# PNG with transparency, 8.3 for RGBA (Pillow's reduce makes a premultiplied full copy),
# 6.3 for 16-bit gray, 4.3 for RGB and 3.1 for a progressive JPEG. Decodes run together
# only while their estimates fit in DECODE_MEMORY_BYTES (two RGBA 4096x4096 do; a bigger
# one waits to run alone). DECODE_SECONDS bounds one decode once it has started, checked
# whenever the decoder reads more input.
DECODE_WORKERS = 2
DECODE_QUEUE = 8
DECODE_BYTES_PER_PIXEL = 10
DECODE_MEMORY_BYTES = 384 * 1024 * 1024
DECODE_SECONDS = 10.0
