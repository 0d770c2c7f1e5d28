"""jobcluster: the library the server, worker, client and web UI share.

It imports nothing from the programs built on top of it.
"""
