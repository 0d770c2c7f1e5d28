"""Bounds on what crosses the wire, in one place: every program sets its gRPC limits from here."""

from __future__ import annotations

#: Largest gRPC message a server or client sends or accepts (gRPC's own default is 4 MiB).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

#: A reply that lists jobs stops adding jobs once it holds about this many bytes; the rest
#: comes on the next page. Under gRPC's default 4 MiB, so clients with default limits (the
#: original Go client) can read every page.
MAX_REPLY_BYTES = 3 * 1024 * 1024

#: The client sends SubmitJobs batches of at most about this many bytes of jobs (also under
#: the 4 MiB a server with default limits accepts).
MAX_BATCH_BYTES = 3 * 1024 * 1024

#: gRPC options that apply the limits above to a server or a channel.
GRPC_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
