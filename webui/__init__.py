"""The web UI: one Starlette process that talks to the servers over gRPC only (see :mod:`webui.app`)."""
